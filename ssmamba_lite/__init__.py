"""ssmamba_lite: a readable, runnable rebuild of SSMamba for learning and ablating.

Start with `scan.py` (the selective scan), then `mamba.py` (a Mamba block). Nothing here
touches CUDA or imports mamba-ssm at import time.
"""

from ssmamba_lite.mamba import Mamba
from ssmamba_lite.scan import selective_scan, selective_scan_reference, which_backend

__version__ = "0.1.0"
__all__ = ["Mamba", "selective_scan", "selective_scan_reference", "which_backend"]
