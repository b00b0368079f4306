"""Training of EGTR on PyTorch Lightning: detector pre-training and relation training (reference §4).

Example:
    >>> from egtr.data import DataConfig
    >>> from egtr.training import TrainConfig, train_egtr
    >>> config = TrainConfig(data=DataConfig(root="data/visual_genome"), detector_weights="runs/detector/model")
    >>> result = train_egtr(config)  # result.model_dir holds the final model (EGTR.from_pretrained)

Lightning is an optional dependency (`pip install 'egtr[train]'`); importing this package needs it.
"""

from egtr.training.checkpoint_io import AtomicCheckpointIO, atomic_torch_save
from egtr.training.config import TrainConfig, resolve_train_config
from egtr.training.datamodule import SceneGraphDataModule
from egtr.training.engine import (
    PassResult,
    TrainResult,
    build_initial_model,
    pretrain_detector,
    run_training,
    train_egtr,
)
from egtr.training.initialization import InitializationReport, load_backbone_weights, load_initial_weights
from egtr.training.module import EGTRLightningModule, NonFiniteLossError, build_parameter_groups

__all__ = [
    "AtomicCheckpointIO",
    "EGTRLightningModule",
    "InitializationReport",
    "NonFiniteLossError",
    "PassResult",
    "SceneGraphDataModule",
    "TrainConfig",
    "TrainResult",
    "atomic_torch_save",
    "build_initial_model",
    "build_parameter_groups",
    "load_backbone_weights",
    "load_initial_weights",
    "pretrain_detector",
    "resolve_train_config",
    "run_training",
    "train_egtr",
]
