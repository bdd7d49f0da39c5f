"""ssmamba_lite: a readable, runnable rebuild of SSMamba for learning and ablating.

The paper, read in this order:
    scan.py    the selective scan (S6): the recurrence, readable, and the dispatcher to the
               fast kernels (kernels/)
    mamba.py   a Mamba block around the scan
    lpr.py     LPR, the Local Perception Residual
    dms.py     DMS, the Directional Multi-scale module
    model.py   SSMamba, the network (presets.py: its named sizes, registered with timm)
    mamim.py   MAMIM, the self-supervised pretraining
Everything else has a room of its own: kernels/ (fast paths), layers/ (token mixers, MLP),
engine/ (data, training, inference), wsi/ (whole slides), course/ (notebook runner, figures,
assignments), cli/ (the `ssmamba-lite` command). ARCHITECTURE.md draws the map.

Importing the package registers the `ssmamba_lite_*` presets with timm. Nothing here touches
CUDA or imports mamba-ssm at import time.
"""

from ssmamba_lite.dms import DirectionalMultiScale
from ssmamba_lite.lpr import LocalPerceptionResidual
from ssmamba_lite.mamba import Mamba
from ssmamba_lite.mamim import MAMIM
from ssmamba_lite.model import SSMamba, SSMambaConfig
from ssmamba_lite.presets import PRESETS  # (registers the presets with timm)
from ssmamba_lite.scan import selective_scan, selective_scan_reference, which_backend

__version__ = "0.1.0"
__all__ = ["MAMIM", "PRESETS", "DirectionalMultiScale", "LocalPerceptionResidual", "Mamba",
           "SSMamba", "SSMambaConfig", "selective_scan", "selective_scan_reference", "which_backend"]
