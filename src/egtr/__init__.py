"""egtr: scene graph generation with EGTR (Im et al., "EGTR: Extracting Graph from Transformer for Scene Graph
Generation", CVPR 2024)."""

from egtr.config import EGTRConfig, LossConfig

__version__ = "0.1.0"
__all__ = ["EGTRConfig", "LossConfig", "__version__"]
