"""Issue #26: the wheel works outside the source tree, in a core install (no extras).

`python -m build` makes the wheel and the sdist; the wheel goes into a new virtual environment in a temporary
folder, and the commands run there with the working directory outside the tree and no PYTHONPATH.

PyTorch is not installed into that environment per test: `pip install torch==2.13.0` took 38 s on the 2-core test
machine (unpacking the wheel), the rest of the test about 30 s. Instead a `.pth` file puts a folder of links to the
running interpreter's torch and its own requirements (filelock, sympy, networkx, ...) on the new environment's path
(`_link_torch`), which pip counts as installed; egtr's other dependencies are installed by pip from the wheel's
metadata, and nothing of the extras is there.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from tests.models.helpers import TINY

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("build") is None, reason="`build` is not installed: pip install build"),
]

ROOT = Path(__file__).parents[1]
PACKAGE_DATA = ["py.typed", "names/*.json", "assets/*.jpg", "schemas/*.json", "serve/static/*"]


def _variables(env: Path | None = None) -> dict[str, str]:
    """The test run's environment without its PYTHONPATH (the source tree, which pip would count as egtr
    installed), with `env`'s bin first on the PATH."""
    variables = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    if env is not None:
        variables["PATH"] = f"{env / 'bin'}{os.pathsep}{variables.get('PATH', '')}"
    return variables


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=_variables())
    assert done.returncode == 0, f"{command}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
    return done


def _requirement_names(distribution: importlib.metadata.Distribution) -> list[str]:
    """Names of a distribution's unconditional requirements (those without an `extra ==` marker)."""
    names = []
    for requirement in distribution.requires or []:
        if "extra ==" not in requirement:
            names.append(re.split(r"[<>=!~\[; (]", requirement, maxsplit=1)[0])
    return names


def _link_torch(site_packages: Path, links: Path) -> None:
    """Links to torch and every distribution it requires (transitively), put on the path by a .pth file."""
    links.mkdir()
    pending, seen = ["torch"], set()
    while pending:
        distribution = importlib.metadata.distribution(pending.pop())
        name = distribution.metadata["Name"].lower()
        if name in seen:
            continue
        seen.add(name)
        pending += _requirement_names(distribution)
        root = Path(str(distribution.locate_file("")))
        tops = {Path(str(file)).parts[0] for file in distribution.files or [] if not str(file).startswith("..")}
        for top in tops:
            if (root / top).exists() and not (links / top).exists() and top != "__pycache__":
                (links / top).symlink_to(root / top)
    (site_packages / "egtr_test_torch.pth").write_text(f"{links}\n")


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)])
    return out


@pytest.fixture(scope="module")
def core_env(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtual environment outside the tree with the wheel installed, its dependencies only: no extras."""
    env = tmp_path_factory.mktemp("core") / "venv"
    _run([sys.executable, "-m", "venv", str(env)])
    site_packages = Path(
        _run(
            [str(env / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
        ).stdout.strip()
    )
    _link_torch(site_packages, env.parent / "torch-links")
    (wheel,) = dist.glob("*.whl")
    _run([str(env / "bin" / "python"), "-m", "pip", "install", "--quiet", str(wheel)])
    return env


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from egtr import EGTR, EGTRConfig

    return EGTR(EGTRConfig(**TINY)).save_pretrained(tmp_path_factory.mktemp("model") / "tiny")


def _in_env(env: Path, *command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run in the environment, from `cwd` (outside the tree), without the test run's PYTHONPATH."""
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=cwd, env=_variables(env))


def _source_version() -> str:
    match = re.search(r'^__version__ = "([^"]+)"', (ROOT / "src" / "egtr" / "version.py").read_text(), re.M)
    assert match
    return match.group(1)


def test_the_wheel_and_sdist_pass_twine_check_and_carry_the_package_data(dist: Path):
    if importlib.util.find_spec("twine") is None:
        pytest.skip("twine is not installed: pip install twine")
    _run([sys.executable, "-m", "twine", "check", "--strict", *map(str, sorted(dist.iterdir()))])
    (wheel,) = dist.glob("*.whl")
    assert wheel.name.startswith(f"egtr-{_source_version()}-py3-none-any")
    names = set(zipfile.ZipFile(wheel).namelist())
    for pattern in PACKAGE_DATA:
        expected = {f"egtr/{path.relative_to(ROOT / 'src' / 'egtr')}" for path in (ROOT / "src" / "egtr").glob(pattern)}
        assert expected and expected <= names, f"{pattern}: {sorted(expected - names)} missing from the wheel"


def test_a_core_install_outside_the_tree_runs_version_info_and_predict(core_env: Path, tiny_model: Path, tmp_path):
    python = str(core_env / "bin" / "python")
    where = _in_env(
        core_env,
        python,
        "-c",
        "import egtr, importlib.metadata as m; print(egtr.__file__, egtr.__version__, m.version('egtr'))",
        cwd=tmp_path,
    )
    location, version, metadata_version = where.stdout.split()
    assert location.startswith(str(core_env)) and version == metadata_version == _source_version()
    assert _in_env(core_env, "egtr", "--version", cwd=tmp_path).stdout.strip() == f"egtr {version}"
    info = _in_env(core_env, "egtr", "info", cwd=tmp_path)
    assert info.returncode == 0 and "parameters:" in info.stdout, info.stderr
    photo = Path(location).parent / "assets" / "coffee.jpg"  # the photo shipped in the package
    predict = _in_env(
        core_env,
        "egtr",
        "predict",
        str(photo),
        "--model",
        str(tiny_model),
        "--out",
        "out",
        "--size",
        "64",
        "--max-size",
        "96",
        cwd=tmp_path,
    )
    assert predict.returncode == 0, predict.stderr
    assert json.loads((tmp_path / "out" / "coffee.json").read_text())["image_path"] == str(photo)
    assert 'note: JSON only, no drawings: drawing needs the viz extra: pip install "egtr[viz]"' in predict.stderr


IMPORT_ALL = """
import importlib, json, pkgutil, warnings
import egtr
from egtr.extras import EXTRA_MODULES
extra_modules = {module for modules in EXTRA_MODULES.values() for module in modules}
imported, needs_extra, broken = [], {}, {}
warnings.simplefilter("ignore", DeprecationWarning)  # the old module paths still import, with a warning
for module in pkgutil.walk_packages(egtr.__path__, "egtr."):
    if any(part.startswith("_") for part in module.name.split(".")):
        continue
    try:
        importlib.import_module(module.name)
        imported.append(module.name)
    except ModuleNotFoundError as error:
        top = (error.name or "").split(".")[0]
        (needs_extra if top in extra_modules else broken)[module.name] = str(error)
    except Exception as error:
        broken[module.name] = repr(error)
print(json.dumps({"imported": imported, "needs_extra": needs_extra, "broken": broken}))
"""


def test_every_public_module_imports_or_names_a_module_of_an_extra(core_env: Path, tmp_path: Path):
    done = _in_env(core_env, str(core_env / "bin" / "python"), "-c", IMPORT_ALL, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["broken"] == {}
    core = {
        "egtr.cli",
        "egtr.inference",
        "egtr.models",
        "egtr.models.hub",
        "egtr.models.publish",
        "egtr.extras",
        "egtr.model_evaluation",
        "egtr.metrics",
        "egtr.data",
        "egtr.cli.video",
        "egtr.bulk.sources",
    }
    assert core <= set(result["imported"])
    assert {"egtr.training", "egtr.serve.app"} <= set(result["needs_extra"])  # Lightning, FastAPI
    assert len(result["imported"]) > 80


EXTRA_COMMANDS = {
    "serve": ["serve", "--model", "m"],
    "train": ["train", "--data-root", "d", "--out", "r"],
    "bulk": ["predict", "x.jpg", "--model", "m", "--out", "o", "--output-format", "parquet"],
    "video": ["predict", "clip.mp4", "--model", "m", "--out", "o"],
    "onnx": ["export", "--model", "m", "--out", "x"],
    "hub": ["hub", "push", "m", "acme/x"],
}


def test_commands_of_the_extras_say_which_to_install_in_a_core_install(core_env: Path, tmp_path: Path):
    (tmp_path / "clip.mp4").write_bytes(b"")
    for extra, argv in EXTRA_COMMANDS.items():
        done = _in_env(core_env, "egtr", *argv, cwd=tmp_path)
        assert done.returncode == 2, (argv, done.stderr)
        (line,) = done.stderr.strip().splitlines()
        assert line.startswith("error: ") and line.endswith(f'needs the {extra} extra: pip install "egtr[{extra}]"')
