"""Deprecated path of `egtr.model_evaluation` (renamed in 0.2: it evaluates a model on a dataset split; the metrics
themselves are `egtr.metrics`)."""

from egtr._deprecated import alias_module

alias_module(__name__, "egtr.model_evaluation")
