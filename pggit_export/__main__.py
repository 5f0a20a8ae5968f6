"""`python -m pggit_export` runs the command line."""

from .cli import main

main()
