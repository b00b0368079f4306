"""The EGTR network (backbone, Deformable DETR body, relation head) and the one reader of model files."""

from egtr.models.checkpoint import Checkpoint, LoadReport, read_checkpoint
from egtr.models.egtr import EGTR, EGTROutput

__all__ = ["EGTR", "Checkpoint", "EGTROutput", "LoadReport", "read_checkpoint"]
