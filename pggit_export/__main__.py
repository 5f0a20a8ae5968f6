"""`python -m pggit_export` runs the command line."""

from pggit_export.cli import main

main()
