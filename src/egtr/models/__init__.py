"""The EGTR network: backbone, Deformable DETR body, relation head, and checkpoint loading."""

from egtr.models.checkpoint import CheckpointError, LoadReport, load_detector_weights, load_egtr, save_egtr
from egtr.models.egtr import EGTR, EGTROutput

__all__ = ["EGTR", "CheckpointError", "EGTROutput", "LoadReport", "load_detector_weights", "load_egtr", "save_egtr"]
