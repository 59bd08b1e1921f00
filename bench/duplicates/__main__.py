"""`python -m bench.duplicates`: see bench/duplicates/cli.py and bench/README.md."""

import sys

from bench.duplicates.cli import main

sys.exit(main())
