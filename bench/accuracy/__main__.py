"""`python -m bench.accuracy [--quick] [--out DIR]`: see bench/README.md."""

import sys

from bench.accuracy.cli import main

sys.exit(main())
