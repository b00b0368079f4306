"""Deprecated path of `egtr.inference.files` (the inference modules are one package since 0.2)."""

from egtr._deprecated import alias_module

alias_module(__name__, "egtr.inference.files")
