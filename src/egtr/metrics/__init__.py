"""Evaluation metrics of EGTR (reference §6): VG scene graph recall, Open Images relation metrics, detection AP.

Every metric has `update(predictions, ground_truths)`, `reset()` and `compute()` returning a result dataclass
whose `to_dict()` gives the original's keys (`(single)R@50`, `mR@50`, `w_rel_mAP`, `microR@50`, `score`,
`bbox/AP50`, ...) and clearer `<group>/<metric>` names.
"""

from egtr.metrics.core import Metric, SceneGroundTruth, ground_truth_from_target, unique_relations
from egtr.metrics.detection import DetectionAP, DetectionAPResult
from egtr.metrics.evaluate import EvaluationReport, evaluate_predictions, evaluate_predictions_file
from egtr.metrics.open_images import OpenImagesRelationMetrics, OpenImagesRelationResult
from egtr.metrics.predictions_file import (
    PredictionsWriter,
    SavedPredictions,
    load_ground_truths,
    load_predictions,
    save_ground_truths,
)
from egtr.metrics.scene_graph_recall import SceneGraphRecall, SceneGraphRecallResult

__all__ = [
    "DetectionAP",
    "DetectionAPResult",
    "EvaluationReport",
    "Metric",
    "OpenImagesRelationMetrics",
    "OpenImagesRelationResult",
    "PredictionsWriter",
    "SavedPredictions",
    "SceneGraphRecall",
    "SceneGraphRecallResult",
    "SceneGroundTruth",
    "evaluate_predictions",
    "evaluate_predictions_file",
    "ground_truth_from_target",
    "load_ground_truths",
    "load_predictions",
    "save_ground_truths",
    "unique_relations",
]
