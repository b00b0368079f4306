"""Deprecated path of `egtr.inference.scene_graph` (the inference modules are one package since 0.2)."""

from egtr._deprecated import alias_module

alias_module(__name__, "egtr.inference.scene_graph")
