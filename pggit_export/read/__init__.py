"""Stage 1, read: the v1 history from the source, read only, grouped into changesets.

``history``: the rows of ``pggit.history`` in order, and the changesets they form.
``sqlsplit``: a recorded text cut into its statements (what ``sqlparse.split`` returns).
``environment``: the session settings (each role's ``search_path``) history ran under.
"""
