"""ssmamba_lite: a readable, runnable rebuild of SSMamba for learning and ablating.

Start with `scan.py` (the selective scan), then `mamba.py` (a Mamba block), `lpr.py` and
`dms.py` (the paper's two modules) and `model.py` (the network). Importing the package
registers the `ssmamba_lite_*` presets with timm. Nothing here touches CUDA or imports
mamba-ssm at import time.
"""

from ssmamba_lite.dms import DirectionalMultiScale
from ssmamba_lite.lpr import LocalPerceptionResidual
from ssmamba_lite.mamba import Mamba
from ssmamba_lite.model import SSMamba, SSMambaConfig
from ssmamba_lite.scan import selective_scan, selective_scan_reference, which_backend

__version__ = "0.1.0"
__all__ = ["DirectionalMultiScale", "LocalPerceptionResidual", "Mamba", "SSMamba",
           "SSMambaConfig", "selective_scan", "selective_scan_reference", "which_backend"]
