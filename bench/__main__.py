"""``python -m gradbench``: the same command line as ``gradbench``."""

from .cli import main

main()
