"""Losses of EGTR: the Hungarian matcher and the criterion (detection, relation, connectivity terms).

Example:
    >>> from egtr import LossConfig
    >>> from egtr.losses import EGTRCriterion
    >>> criterion = EGTRCriterion(LossConfig(), num_labels=150, num_rel_labels=50)
    >>> losses = criterion(model_outputs, targets, training=True)  # losses["loss"]: the weighted total
"""

from egtr.losses.criterion import EGTRCriterion, Matching
from egtr.losses.functional import sample_relation_entries, sigmoid_focal_loss
from egtr.losses.matcher import HungarianMatcher, focal_class_cost

__all__ = [
    "EGTRCriterion",
    "HungarianMatcher",
    "Matching",
    "focal_class_cost",
    "sample_relation_entries",
    "sigmoid_focal_loss",
]
