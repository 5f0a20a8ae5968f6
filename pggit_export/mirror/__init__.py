"""Stage 5, mirror: an exported repository copied into pgGit's v2 and audit tables.

``write``: the mirror itself.
``verify``: the mirror checked against its repository, and the repository against v1.
"""
