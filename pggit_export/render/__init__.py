"""Stage 3, render: the shadow's catalog as one SQL text per object, and where it is filed.

``snapshot``: the catalog queries and the text of each object.
``dialect``: names written as the source's major writes them, when the shadow's differs.
``rawparse``: the shadow server's own parser, for what only a parser can tell (a view's columns).
``layout``: the path of each object's file, ``<schema>/<name>.sql``.
``state``: the snapshot carried from one changeset to the next, and its file changes.
"""
