"""`python -m ssmamba_lite.cli ...`: the `ssmamba-lite` command (torchrun starts it this way)."""

import sys

from ssmamba_lite.cli import main

sys.exit(main())
