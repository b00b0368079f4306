"""The one set of prediction options: what post-processing keeps of a model output.

Predict, serve, bulk, video, given boxes and evaluation all read a `PredictionOptions`; per-call overrides go through
`PredictionOptions.replace`, which refuses a misspelt name before any work is done.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass

__all__ = ["PredictionOptions"]


@dataclass(frozen=True)
class PredictionOptions:
    """What `Predictor` keeps of each image's ranked triplets (the ranking itself is the paper's).

    Attributes:
        top_k: keep at most this many relations per image (ranked by triplet score).
        score_threshold: drop relations whose triplet score is below this.
        graph_constraint: one predicate per subject/object pair (the paper's main setting); False allows several.
        object_threshold: also keep objects with score >= this that take part in no kept relation (None: only the
            objects of the kept relations).
    """

    top_k: int = 20
    score_threshold: float = 0.0
    graph_constraint: bool = True
    object_threshold: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.top_k, int) or isinstance(self.top_k, bool) or self.top_k < 1:
            raise ValueError(f"top_k must be an integer >= 1, got {self.top_k!r}")
        if not _is_real(self.score_threshold):
            raise ValueError(f"score_threshold must be a finite number, got {self.score_threshold!r}")
        if not isinstance(self.graph_constraint, bool):
            raise ValueError(f"graph_constraint must be True or False, got {self.graph_constraint!r}")
        if self.object_threshold is not None and not _is_real(self.object_threshold):
            raise ValueError(f"object_threshold must be a finite number or None, got {self.object_threshold!r}")

    def replace(self, **overrides: int | float | bool | None) -> PredictionOptions:
        """A copy with `overrides` applied; an unknown name raises `TypeError` naming the known ones."""
        names = [field.name for field in dataclasses.fields(self)]
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            raise TypeError(f"unknown prediction options {unknown}; expected some of {sorted(names)}")
        return dataclasses.replace(self, **overrides)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, int | float | bool | None]:
        return dataclasses.asdict(self)


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
