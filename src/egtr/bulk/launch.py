"""The processes of a bulk run: how many this machine runs, who starts them, and what is said when one dies.

Lightning starts the other local ranks of `--devices N` as children of the command (rank 0), and when one of them
dies it kills every process, the command included, with SIGKILL: the command ended with exit code 137 and printed
nothing. So for a local multi-process run the command starts the N ranks itself (the same command line, with the
variables Lightning reads for processes started from outside: MASTER_ADDR, MASTER_PORT, NODE_RANK, LOCAL_RANK,
WORLD_SIZE), imports neither torch nor Lightning, and watches them (`supervise`): when a rank dies, the others are
stopped, and one line says which process died and how, that the shards on disk are whole, and that the same command
again completes the run; the exit code is 1. Ranks started by torchrun or SLURM are watched by those.

A rank tells the supervisor how it ended through a file in a folder the supervisor names (`EGTR_BULK_STATUS_DIR`):
"done" (it finished; its exit code is the run's), "peer-lost" (it stopped because another process died: the
supervisor explains, the rank says nothing). A rank that ends without either failed and said why itself.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from egtr.bulk.sources import BulkInputError

STATUS_DIR_VARIABLE = "EGTR_BULK_STATUS_DIR"
RERUN_ADVICE = "the shards on disk are whole: run the same command again to predict the missing records"
# Variables of launchers that start every process themselves (torchrun, SLURM's srun, LSF, Kubeflow, ...).
_EXTERNAL_LAUNCH = ("LOCAL_RANK", "RANK", "WORLD_SIZE", "TORCHELASTIC_RUN_ID", "LSB_JOBID")
_POLL_SECONDS = 0.2
# torch's messages for a DataLoader worker that died (its pid, and how).
_WORKER_DEATH = re.compile(r"DataLoader worker \(pid(?:\(s\))? (\d+)[^)]*\) (?:is killed by signal: ([^.]+)|exited)")
# Communication failures of a rank whose peer went away (gloo over TCP, NCCL).
_PEER_LOSS = ("Connection reset by peer", "Connection closed by peer", "Broken pipe", "gloo", "NCCL")


class ProcessLostError(ChildProcessError):
    """A process of a bulk run died (a rank or a decode worker). An OSError, not the input's fault: the command
    line prints the message as one line and exits 1."""


class PeerLostError(ProcessLostError):
    """This rank stopped because another process of the run died (the next collective failed)."""


def lightning_devices(device: str, devices: str) -> tuple[str, int | str | list[int]]:
    """`egtr predict --device` (auto, cpu, cuda, cuda:N) and `--devices` (a count or "auto") in Lightning's terms:
    (accelerator, devices). BulkInputError for a combination that means nothing; ValueError (from
    `egtr.runtime.resolve_device`) for a device that is not there."""
    if devices != "auto" and not (devices.isdigit() and int(devices) > 0):
        raise BulkInputError(f"--devices must be a positive number or 'auto', got {devices!r}")
    count: int | str = int(devices) if devices.isdigit() else devices
    kind, _, index = device.partition(":")
    if device not in ("auto", "cpu") and kind != "cuda":
        raise BulkInputError(f"--device {device}: bulk prediction runs on auto, cpu, cuda or cuda:N")
    if index and count != 1:
        raise BulkInputError(f"--device {device} names one GPU; use --device cuda --devices {devices} for several")
    if device != "cpu" or count == "auto":
        from egtr.runtime import resolve_device  # torch: only where a GPU may be meant

        resolve_device(device)  # a clear error when CUDA is asked for and absent
    if device in ("auto", "cpu"):
        return device, count
    return ("gpu", [int(index)]) if index else ("gpu", count)


def local_processes(accelerator: str, devices: int | str | list[int]) -> int:
    """How many processes this machine runs for Lightning's (accelerator, devices)."""
    if isinstance(devices, list):
        return len(devices)
    if isinstance(devices, int):
        return devices
    if accelerator == "cpu":
        return 1  # Lightning's "auto" on CPU
    import torch

    return max(1, torch.cuda.device_count())


def started_externally() -> bool:
    """Whether a launcher (torchrun, srun, ...) started this process as one rank of several."""
    if any(name in os.environ for name in _EXTERNAL_LAUNCH):
        return True
    # Lightning's rule for SLURM: tasks of a batch job, not an interactive allocation.
    return "SLURM_NTASKS" in os.environ and os.environ.get("SLURM_JOB_NAME") not in ("bash", "interactive")


def supervised() -> bool:
    """Whether this process is a rank started by `supervise`."""
    return STATUS_DIR_VARIABLE in os.environ


def report_status(status: str) -> None:
    """In a rank started by `supervise`: say how it ends ("done" or "peer-lost"); elsewhere nothing."""
    folder = os.environ.get(STATUS_DIR_VARIABLE)
    if folder:
        Path(folder, f"rank-{os.environ.get('LOCAL_RANK', '0')}").write_text(status)


def supervise(command: list[str], processes: int) -> int:
    """Run `command` as `processes` ranks on this machine and wait for them; the exit code of the run.

    When a rank dies, the others are killed (a shard is committed by an atomic rename, so a kill never leaves half a
    shard) and one line says which rank died and how (unless the rank said so itself: a decode worker that died).
    """
    status_dir = Path(tempfile.mkdtemp(prefix="egtr-bulk-"))
    port = _free_port()
    ranks: list[subprocess.Popen[bytes]] = []
    try:
        for rank in range(processes):
            environment = {
                **os.environ,
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
                "NODE_RANK": "0",
                "LOCAL_RANK": str(rank),
                "WORLD_SIZE": str(processes),
                STATUS_DIR_VARIABLE: str(status_dir),
            }
            ranks.append(subprocess.Popen(command, env=environment, preexec_fn=_DIE_WITH_PARENT))
        return _watch(ranks, status_dir)
    except KeyboardInterrupt:
        for process in ranks:  # they got the Ctrl-C too: let them stop and say so
            process.wait()
        raise
    finally:
        for process in ranks:
            if process.poll() is None:
                process.kill()
                process.wait()
        shutil.rmtree(status_dir, ignore_errors=True)


def _watch(ranks: list[subprocess.Popen[bytes]], status_dir: Path) -> int:
    """Wait until every rank finished (the largest exit code) or one failed (1 and one line, see `supervise`)."""
    while True:
        statuses = [None if process.poll() is None else _status(status_dir, rank) for rank, process in enumerate(ranks)]
        failed = [rank for rank, status in enumerate(statuses) if status not in (None, "done")]
        if failed:
            stopped = {rank for rank, process in enumerate(ranks) if process.poll() is None}
            for rank in stopped:
                ranks[rank].kill()
            for process in ranks:
                process.wait()
            return _explain_failure(ranks, status_dir, stopped)
        if all(status == "done" for status in statuses):
            return max(process.returncode for process in ranks)
        time.sleep(_POLL_SECONDS)


def _status(status_dir: Path, rank: int) -> str:
    path = status_dir / f"rank-{rank}"
    return path.read_text() if path.is_file() else "failed"


def _explain_failure(ranks: list[subprocess.Popen[bytes]], status_dir: Path, stopped: set[int]) -> int:
    """Print the line that names the process that died, unless the failed rank printed it; returns the exit code."""
    world = len(ranks)
    causes = [rank for rank in range(world) if rank not in stopped and _status(status_dir, rank) != "done"]
    killed = [rank for rank in causes if ranks[rank].returncode < 0]
    if killed:
        rank = killed[0]
        process = ranks[rank]
        print(
            f"error: rank {rank}/{world} (pid {process.pid}) was killed by {signal_words(-process.returncode)}; "
            f"{RERUN_ADVICE}",
            file=sys.stderr,
        )
        return 1
    spoke = [rank for rank in causes if _status(status_dir, rank) != "peer-lost"]
    if spoke:  # the rank printed its own one-line error (a decode worker that died, a failure of its own)
        return max(ranks[rank].returncode for rank in spoke) or 1
    print(f"error: the processes of the run lost each other; {RERUN_ADVICE}", file=sys.stderr)
    return 1


def signal_words(number: int) -> str:
    """'signal 9 (SIGKILL)'."""
    try:
        return f"signal {number} ({signal.Signals(number).name})"
    except ValueError:
        return f"signal {number}"


def explain_lost_process(error: BaseException, rank: int, world_size: int) -> ProcessLostError | None:
    """A one-line `ProcessLostError` for an exception that means a process of the run died: a DataLoader (decode)
    worker of this rank, or (`PeerLostError`) another rank; None for any other exception."""
    text = str(error)
    worker = _WORKER_DEATH.search(text)
    if worker is not None:
        pid, how = int(worker.group(1)), worker.group(2)
        death = f"was killed by {_signal_from_description(how)}" if how else _death_of_child(pid)
        return ProcessLostError(f"decode worker (pid {pid}) of rank {rank}/{world_size} {death}; {RERUN_ADVICE}")
    if world_size > 1 and (_is_distributed_error(error) or any(words in text for words in _PEER_LOSS)):
        first_line = " ".join(text.strip().splitlines()[:1])[:200]
        return PeerLostError(f"rank {rank}/{world_size} lost another process of the run ({first_line}); {RERUN_ADVICE}")
    return None


def _death_of_child(pid: int) -> str:
    """How this process's multiprocessing child `pid` ended, from its `Process` object: torch's message for a worker
    that vanished while the rank waited for its data gives no signal, and the worker has been reaped already."""
    import gc
    import multiprocessing.process

    for item in gc.get_objects():  # the DataLoader holds its workers' Process objects; only on this failure path
        if isinstance(item, multiprocessing.process.BaseProcess) and item.pid == pid and item.exitcode is not None:
            code = item.exitcode
            return f"was killed by {signal_words(-code)}" if code < 0 else f"exited with code {code}"
    return "exited unexpectedly"


def _is_distributed_error(error: BaseException) -> bool:
    import torch.distributed

    return isinstance(error, torch.distributed.DistError)


def _signal_from_description(description: str) -> str:
    """torch names a worker's signal by its description ("Killed"): back to 'signal 9 (SIGKILL)'."""
    for number in signal.Signals:
        if signal.strsignal(number) == description.strip():
            return signal_words(number)
    return f"signal ({description.strip()})"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _die_with_parent() -> None:
    """In a rank, before it runs (Linux): be killed when the command that started it dies (kill -9 of the command
    would otherwise leave the ranks running on without anyone to report to)."""
    import ctypes

    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


_DIE_WITH_PARENT = _die_with_parent if sys.platform.startswith("linux") else None
