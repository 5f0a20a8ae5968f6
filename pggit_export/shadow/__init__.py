"""Stage 2, replay: each changeset run in the shadow, a private scratch database.

``server``: the private PostgreSQL server the shadow lives in.
``replay``: the shadow database, the statement policy, and the replay of one changeset.
``heal``: repairs of the shadow when a changeset fails for a gap in the history.
"""
