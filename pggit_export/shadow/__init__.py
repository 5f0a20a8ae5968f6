"""Stage 2, replay: each changeset run in the shadow, a private scratch database.

``server``: the private PostgreSQL server the shadow lives in.
``replay``: the shadow database, the statement policy, and the replay of one changeset.
``pipeline``: the changeset pipeline: one changeset replays while the one before is taken,
rendered and committed (the only place that knows about that overlap).
``heal``: repairs of the shadow when a changeset fails for a gap in the history, and the
repairs the evidence places before or after a changeset (triggers, replaced overloads, v1's
metadata as a post-condition).
``evidence``: the read-ahead over the whole history (what later rows add, what any row
creates) and OID chronology, which bound and place the repairs.
``prehistory``: the live objects no history row creates, loaded as the root commit.
``standin``: stand-ins for extensions the shadow's server lacks.
"""
