"""`python -m ddbench`: the `ddbench` command line (ddbench/cli.py)."""
import sys

from .cli import main

sys.exit(main())
