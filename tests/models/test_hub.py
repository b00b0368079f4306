"""Issue #26: models by name (`org/name`) through huggingface_hub's cache, with the network blocked.

The Hub cannot be reached from the test machines, so each test lays a model out in huggingface_hub's documented
cache format (`models--org--name/{blobs,refs/<revision>,snapshots/<commit>/...}`, huggingface.co/docs/hub/
local-cache) under a temporary HF_HOME, sets HF_HUB_OFFLINE=1 and makes every socket connect fail.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
from pathlib import Path
from unittest.mock import MagicMock

import pytest
import torch
from tests.models.helpers import TINY

import egtr
from egtr import EGTR, EGTRConfig, Predictor
from egtr.errors import HubError
from egtr.models import read_checkpoint
from egtr.models.hub import HUB_FILES, parse_model_name, resolve_model_path

pytest.importorskip("huggingface_hub", reason="the hub extra is not installed: pip install 'egtr[hub]'")

PHOTO = Path(egtr.__file__).parent / "assets" / "coffee.jpg"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
# Run first in the subprocesses: any connection attempt fails the command.
SOCKET_GUARD = (
    "import socket\n"
    "def refuse(*args, **kwargs):\n"
    "    raise AssertionError(f'network access attempted: {args}')\n"
    "socket.socket.connect = refuse\n"
    "socket.create_connection = refuse\n"
)


def cache_model(hf_home: Path, repo_id: str, model_dir: Path, revision: str = "main", commit: str = COMMIT) -> Path:
    """Put the files of `model_dir` into the HF cache as huggingface_hub's download would: blobs by hash,
    the snapshot's files as relative symlinks to them, `refs/<revision>` holding the commit."""
    repo = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for file in model_dir.iterdir():
        data = file.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / file.name).symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / revision).write_text(commit)
    return snapshot


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return EGTR(EGTRConfig(**TINY)).save_pretrained(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture
def offline_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary HF_HOME (also set as huggingface_hub's cache constant, read once at its import), offline, and
    every socket connect refused."""
    from huggingface_hub import constants

    hf_home = tmp_path / "hf_home"
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hf_home / "hub"))

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return hf_home


def _same_weights(first: EGTR, second: EGTR) -> bool:
    return all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))


def test_names_and_paths_are_told_apart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    assert parse_model_name("org/name") == ("org/name", None)
    assert parse_model_name("hf://org/name@v1.0") == ("org/name", "v1.0")
    assert parse_model_name("/abs/org/name") is None and parse_model_name("a/b/c") is None
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "name").mkdir(parents=True)
    assert resolve_model_path("org/name") == Path("org/name")  # an existing local path wins
    assert resolve_model_path("runs/model.ckpt.d/x/y") == Path("runs/model.ckpt.d/x/y")  # not a name: a path


def test_a_model_loads_by_name_from_the_cache_offline(tiny_model: Path, offline_cache: Path):
    cache_model(offline_cache, "egtr-test/tiny", tiny_model)
    by_name = EGTR.from_pretrained("egtr-test/tiny")
    assert _same_weights(by_name, EGTR.from_pretrained(tiny_model))
    checkpoint = read_checkpoint("hf://egtr-test/tiny")
    assert "models--egtr-test--tiny/snapshots/" + COMMIT in str(checkpoint.source)
    assert checkpoint.layout == "egtr-directory"


def test_a_revision_is_found_by_its_ref_and_a_local_folder_of_the_same_name_wins(
    tiny_model: Path, offline_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    torch.manual_seed(1)
    other = EGTR(EGTRConfig(**TINY)).save_pretrained(tmp_path / "other")
    cache_model(offline_cache, "egtr-test/tiny", other, revision="v2", commit="f" * 40)
    predictor = Predictor.from_pretrained("egtr-test/tiny", revision="v2", device="cpu", size=64, max_size=96)
    assert _same_weights(predictor.model, EGTR.from_pretrained(other))
    assert isinstance(predictor(PHOTO), egtr.SceneGraph)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "egtr-test").mkdir()
    (tmp_path / "egtr-test" / "tiny").symlink_to(tiny_model)
    assert _same_weights(EGTR.from_pretrained("egtr-test/tiny"), EGTR.from_pretrained(tiny_model))
    assert _same_weights(EGTR.from_pretrained("hf://egtr-test/tiny@v2"), EGTR.from_pretrained(other))


def test_a_missing_revision_and_an_uncached_name_offline_are_one_clear_error(tiny_model: Path, offline_cache: Path):
    cache_model(offline_cache, "egtr-test/tiny", tiny_model)
    with pytest.raises(HubError, match=r"^egtr-test/tiny \(revision v9\): not in the Hugging Face cache and "):
        EGTR.from_pretrained("egtr-test/tiny", revision="v9")
    with pytest.raises(HubError, match=r"^egtr-test/absent: not in the Hugging Face cache and HF_HUB_OFFLINE is set"):
        Predictor.from_pretrained("egtr-test/absent")


def test_downloads_ask_only_for_egtrs_files(monkeypatch: pytest.MonkeyPatch):
    import huggingface_hub
    from huggingface_hub.errors import RepositoryNotFoundError

    calls = []

    def fake_snapshot_download(repo_id: str, **kwargs: object) -> str:
        calls.append((repo_id, kwargs))
        raise RepositoryNotFoundError("404 Repository Not Found", response=MagicMock(status_code=404))

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    with pytest.raises(HubError, match=r"^egtr-test/x: no such model on the Hugging Face Hub"):
        resolve_model_path("egtr-test/x@abc")
    assert calls == [("egtr-test/x", {"revision": "abc", "allow_patterns": HUB_FILES, "local_files_only": False})]


def _egtr(hf_home: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """`egtr ARGV` in a fresh process: HF_HOME and HF_HUB_OFFLINE as a user sets them, sockets refused."""
    code = SOCKET_GUARD + "import sys\nfrom egtr.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    return subprocess.run([sys.executable, "-c", code, *argv], env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_the_command_line_takes_names_and_says_what_is_missing_in_one_line(tiny_model: Path, tmp_path: Path):
    hf_home = tmp_path / "hf_home"
    cache_model(hf_home, "egtr-test/tiny", tiny_model)
    fast = ["--size", "64", "--max-size", "96", "--device", "cpu", "--no-draw", "--no-progress"]
    done = _egtr(hf_home, "predict", str(PHOTO), "--model", "egtr-test/tiny", "--out", str(tmp_path / "o"), *fast)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "o" / "coffee.json").is_file()
    missing = _egtr(hf_home, "info", "--model", "egtr-test/tiny@v9")
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        f"error: egtr-test/tiny (revision v9): not in the Hugging Face cache and HF_HUB_OFFLINE is set "
        f"(cache: {hf_home / 'hub'})"
    ]
    absent = _egtr(hf_home, "info", "--model", "egtr-test/absent")
    assert absent.returncode == 2 and absent.stderr.startswith("error: egtr-test/absent: not in the Hugging Face")
