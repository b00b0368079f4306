"""Issue #26: a command that needs an optional dependency says which extra, in one line, before any work.

The extras are made to look absent by hiding their modules from `importlib.util.find_spec` (what
`egtr.extras.require_extra` asks); tests/test_packaging.py runs the same commands in a real core-only install.
The model given is a path that does not exist: an extra checked after loading would fail on the path instead.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import tomllib
from pathlib import Path

import pytest

from egtr.cli import main
from egtr.extras import EXTRA_MODULES

PYPROJECT = Path(__file__).parents[1] / "pyproject.toml"
NO_MODEL = "no-such-model-dir"


def _hide(monkeypatch: pytest.MonkeyPatch, extra: str) -> None:
    hidden = set(EXTRA_MODULES[extra])
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in hidden else find_spec(name, *a))


COMMANDS = [
    ("serve", ["serve", "--model", NO_MODEL], 'egtr serve needs the serve extra: pip install "egtr[serve]"'),
    ("train", ["train", "--data-root", "{tmp}", "--out", "{tmp}/run"], "egtr train needs the train extra"),
    ("train", ["pretrain-detector", "--data-root", "{tmp}", "--out", "{tmp}/d"], "egtr pretrain-detector needs the"),
    ("train", ["demo", "--quick", "--out", "{tmp}/demo"], "egtr demo needs the train extra"),
    ("viz", ["demo", "--quick", "--out", "{tmp}/demo"], "egtr demo needs the viz extra"),
    (
        "bulk",
        ["predict", "{tmp}", "--model", NO_MODEL, "--out", "{tmp}/o", "--output-format", "parquet"],
        '--output-format parquet needs the bulk extra: pip install "egtr[bulk]"',
    ),
    ("bulk", ["predict", "{tmp}/s/{{0..3}}.tar", "--model", NO_MODEL, "--out", "{tmp}/o"], "needs the bulk extra"),
    ("video", ["predict", "{tmp}/clip.mp4", "--model", NO_MODEL, "--out", "{tmp}/o"], "on videos needs the video"),
    ("viz", ["predict", "{tmp}/a.jpg", "--model", NO_MODEL, "--out", "{tmp}/o", "--format", "svg"], "--format svg"),
    ("onnx", ["export", "--model", NO_MODEL, "--out", "{tmp}/x"], "export --format onnx needs the onnx extra"),
    ("openvino", ["export", "--model", NO_MODEL, "--out", "{tmp}/x", "--format", "openvino"], "the openvino extra"),
    (
        "onnx",
        ["predict", "{tmp}/a.jpg", "--model", NO_MODEL, "--out", "{tmp}/o", "--runtime", "onnxruntime"],
        '--runtime onnxruntime needs the onnx extra: pip install "egtr[onnx]"',
    ),
    ("hub", ["hub", "push", NO_MODEL, "acme/x"], 'egtr hub push needs the hub extra: pip install "egtr[hub]"'),
    ("hub", ["info", "--model", "hf://acme/x"], 'hf://acme/x needs the hub extra: pip install "egtr[hub]"'),
    ("hub", ["info", "--model", "acme/x"], "acme/x: no such file or folder; loading it by name from the Hub needs"),
    ("openvino", ["benchmark", "--model", NO_MODEL, "--runtime", "openvino"], "--runtime openvino needs the openvino"),
]


@pytest.mark.parametrize(
    ("extra", "argv", "expected"), COMMANDS, ids=[" ".join(c[1][:2]) + f"-{c[0]}" for c in COMMANDS]
)
def test_a_command_without_its_extra_names_it_in_one_line(extra, argv, expected, tmp_path, monkeypatch, capsys):
    (tmp_path / "a.jpg").write_bytes(b"not read: the extra is checked first")
    (tmp_path / "clip.mp4").write_bytes(b"")
    _hide(monkeypatch, extra)
    code = main([item.format(tmp=tmp_path) for item in argv])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], lines
    assert lines[0].endswith(f'pip install "egtr[{extra}]"')


def test_predict_without_the_viz_extra_writes_json_and_says_why_nothing_is_drawn(tmp_path, monkeypatch, capsys):
    from tests.models.helpers import TINY

    import egtr
    from egtr import EGTR, EGTRConfig

    model = EGTR(EGTRConfig(**TINY)).save_pretrained(tmp_path / "model")
    photo = Path(egtr.__file__).parent / "assets" / "coffee.jpg"
    _hide(monkeypatch, "viz")
    code = main(["predict", str(photo), "--model", str(model), "--out", str(tmp_path / "o"), "--size", "64"])
    assert code == 0
    note = 'note: JSON only, no drawings: drawing needs the viz extra: pip install "egtr[viz]" (or --no-draw)'
    assert note in capsys.readouterr().err
    assert sorted(path.name for path in (tmp_path / "o").iterdir()) == ["coffee.json"]


def _pyproject_extras() -> dict[str, list[str]]:
    return tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]


def _requirement_name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_each_extras_modules_come_from_that_extras_requirements():
    """EXTRA_MODULES (what is checked) and pyproject's extras (what is installed) name the same packages."""
    extras = _pyproject_extras()
    providers = importlib.metadata.packages_distributions()
    for extra, modules in EXTRA_MODULES.items():
        declared = {_requirement_name(requirement) for requirement in extras[extra]}
        for module in modules:
            if module not in providers:
                pytest.skip(f"{module} is not installed here (the {extra} extra)")
            distributions = {name.lower().replace("_", "-") for name in providers[module]}
            assert distributions & declared, f"{module} ({distributions}) is not a requirement of the {extra} extra"


def test_all_holds_the_users_extras_and_not_the_developers():
    extras = _pyproject_extras()
    (all_requirement,) = extras["all"]
    in_all = set(re.search(r"\[(.*)\]", all_requirement).group(1).split(","))  # type: ignore[union-attr]
    assert in_all == set(EXTRA_MODULES)  # train, viz, serve, video, bulk, onnx, openvino, hub
    assert "dev" not in in_all and "docs" not in in_all
