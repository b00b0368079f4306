"""Bulk prediction in several processes (Lightning DDP over gloo on CPU) and after kill -9: the same records."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.bulk.conftest import environment, make_images, make_predictor, predict_command, read_records

from egtr.bulk import BulkOptions, Corpus, predict_corpus


@pytest.mark.slow
def test_two_processes_write_the_records_of_one(single_process_run, corpus_files, tmp_path):
    out = tmp_path / "out"
    command = predict_command([str(path) for path in corpus_files], out, "--devices", "2", "--shard-size", "4")
    completed = subprocess.run(
        [*command, "--decode-workers", "1"], env=environment(), capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 1, completed.stderr[-3000:]  # 1: the broken file was reported
    assert read_records(out) == read_records(single_process_run)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["world_size"] == 2 and manifest["counts"] == {"records": 20, "errors": 1, "shards": 6}
    assert "rank 0/2" in completed.stderr and "rank 1/2" in completed.stderr  # each rank reports its share


@pytest.mark.slow
def test_killed_run_resumes_without_duplicates_or_truncation(tmp_path):
    """kill -9 of the run mid-way, then the same command again: exactly the records of an uninterrupted run."""
    images = [str(path) for path in make_images(tmp_path / "images", 24, seed=1)]
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    command = predict_command(images, killed, "--shard-size", "2", "--decode-workers", "1")
    process = subprocess.Popen(command, env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if len(list((killed / "shards").glob("*.parquet"))) >= 3:
                break
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    done_before = sorted((killed / "shards").glob("*.parquet"))
    assert 3 <= len(done_before) < 12, process.stderr.read()[-3000:]  # killed mid-run
    assert not (killed / "manifest.json").exists()
    visible = read_records(killed)  # every visible shard is complete and readable
    assert len(visible) == 2 * len(done_before)

    resumed = subprocess.run(command, env=environment(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"rank 0/1: {24 - len(visible)} images" in resumed.stderr  # only the missing ones were predicted

    corpus = Corpus(files=tuple(images), shard_size=2)  # the uninterrupted run, in this process (one thread too)
    predict_corpus(make_predictor(), corpus, BulkOptions(out=clean, num_workers=0, progress=False))
    records = read_records(killed)
    assert [record["key"] for record in records] == images  # each image once, in input order
    assert records == read_records(clean)
    assert not list((killed / "shards").glob(".*"))  # no temporary file left visible
    assert json.loads((killed / "manifest.json").read_text())["counts"] == {"records": 24, "errors": 0, "shards": 12}


def _children(pid: int) -> list[int]:
    """The child processes of `pid` that run egtr (ranks of the command; decode workers, forked, of a rank)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    children = [int(child) for child in path.read_text().split()] if path.exists() else []
    return [child for child in children if "egtr.cli" in _read(f"/proc/{child}/cmdline")]


def _read(path: str) -> str:
    try:
        return Path(path).read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:  # the process has just ended
        return ""


def _rank_one(command_pid: int) -> int | None:
    """The pid of rank 1 of the command: egtr starts the ranks itself, with LOCAL_RANK set."""
    ranks = [child for child in _children(command_pid) if "LOCAL_RANK=1 " in _read(f"/proc/{child}/environ") + " "]
    return ranks[0] if ranks else None


def _kill_mid_run(command: list[str], out: Path, victim_of: Callable[[int], int | None]) -> tuple[int, int, str]:
    """Start `command`, kill -9 the process `victim_of(command pid)` names once 2 shards are written; (the victim,
    the command's exit code, its stderr)."""
    process = subprocess.Popen(command, env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    victim = None
    try:
        while time.monotonic() < deadline and process.poll() is None and victim is None:
            if len(list((out / "shards").glob("*.parquet"))) >= 2:
                victim = victim_of(process.pid)
                if victim is not None:
                    os.kill(victim, signal.SIGKILL)
            time.sleep(0.05)
        returncode = process.wait(timeout=180)  # the command notices the lost process
    finally:
        if process.poll() is None:
            process.kill()
    stderr = process.stderr.read().decode() if process.stderr else ""
    assert victim is not None, stderr[-3000:]
    return victim, returncode, stderr


def _assert_one_line_and_whole_shards(stderr: str, expected: str, out: Path) -> None:
    """One error line, `expected` in it with the rerun advice, no words of torch, gloo or Lightning; no manifest, and
    every visible shard whole."""
    errors = [line for line in stderr.splitlines() if line.startswith(("error:", "internal error:"))]
    assert len(errors) == 1 and expected in errors[0], stderr[-3000:]
    assert errors[0].endswith("the shards on disk are whole: run the same command again to predict the missing records")
    assert not any(words in stderr for words in ("Traceback", "gloo", "Connection reset", "DataLoader")), stderr
    assert not (out / "manifest.json").exists()
    visible = read_records(out)  # every visible shard is complete and readable
    assert len({record["key"] for record in visible}) == len(visible)


@pytest.mark.slow
def test_one_killed_rank_stops_the_run_and_the_rerun_completes_it(single_process_run, corpus_files, tmp_path):
    """kill -9 of rank 1 of a 2-process run: the command stops the other rank (it does not wait for ever), prints
    one line naming the rank, its pid and the signal, and exits 1; every visible shard is whole, and the same
    command again finishes exactly the missing shards."""
    out = tmp_path / "out"
    inputs = [str(path) for path in corpus_files]
    command = [*predict_command(inputs, out, "--devices", "2", "--shard-size", "4"), "--decode-workers", "0"]
    victim, returncode, stderr = _kill_mid_run(command, out, _rank_one)
    assert returncode == 1, stderr[-3000:]
    _assert_one_line_and_whole_shards(stderr, f"error: rank 1/2 (pid {victim}) was killed by signal 9 (SIGKILL)", out)

    resumed = subprocess.run(command, env=environment(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 1, resumed.stderr[-3000:]  # 1: the broken file of the corpus was reported
    assert read_records(out) == read_records(single_process_run)
    assert not list((out / "shards").glob(".*"))  # no temporary file left visible


@pytest.mark.slow
def test_a_killed_decode_worker_is_named(corpus_files, tmp_path):
    """kill -9 of a decode worker (DataLoader process) of rank 1: one line naming the worker's pid, its rank and the
    signal instead of gloo's "Connection reset by peer"; exit 1, the visible shards whole."""
    out = tmp_path / "out"
    inputs = [str(path) for path in corpus_files]
    command = [*predict_command(inputs, out, "--devices", "2", "--shard-size", "4"), "--decode-workers", "1"]

    def worker_of_rank_one(command_pid: int) -> int | None:
        rank = _rank_one(command_pid)
        workers = _children(rank) if rank is not None else []
        return workers[0] if workers else None

    worker, returncode, stderr = _kill_mid_run(command, out, worker_of_rank_one)
    assert returncode == 1, stderr[-3000:]
    expected = f"error: decode worker (pid {worker}) of rank 1/2 was killed by signal 9 (SIGKILL)"
    _assert_one_line_and_whole_shards(stderr, expected, out)
