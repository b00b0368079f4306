"""Deprecated path of `egtr.model_summary` (renamed in 0.2: `egtr info`'s description of a model; a dataset's summary is
`egtr.data.summary`)."""

from egtr._deprecated import alias_module

alias_module(__name__, "egtr.model_summary")
