"""Stage 4, write: real git objects with dulwich, one commit per changeset.

``writer``: blobs, trees, commits and the branch, written safely.
``message``: a commit's subject, body and ``Pggit-*`` trailers.
``authors``: who a database user is in git.
"""
