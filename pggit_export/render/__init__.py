"""Stage 3, render: the shadow's catalog as one SQL text per object, and where it is filed.

``snapshot``: the catalog queries and the text of each object.
``layout``: the path of each object's file, ``<schema>/<name>.sql``.
``state``: the snapshot carried from one changeset to the next, and its file changes.
"""
