"""Deprecated path of `egtr.cli.video` (the command-line code lives in `egtr.cli` since 0.2)."""

from egtr._deprecated import alias_module

alias_module(__name__, "egtr.cli.video")
