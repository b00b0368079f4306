"""egtr: scene graph generation with EGTR (Im et al., "EGTR: Extracting Graph from Transformer for Scene Graph
Generation", CVPR 2024)."""

from egtr.allocator import tune_cpu_allocator
from egtr.config import EGTRConfig, LossConfig
from egtr.errors import CheckpointError, DataError, EgtrError
from egtr.inference import Predictor
from egtr.inference.scene_graph import SceneGraph
from egtr.models import EGTR, EGTROutput
from egtr.version import __version__

__all__ = [
    "EGTR",
    "CheckpointError",
    "DataError",
    "EGTRConfig",
    "EGTROutput",
    "EgtrError",
    "LossConfig",
    "Predictor",
    "SceneGraph",
    "__version__",
    "tune_cpu_allocator",
]
