"""Micro-batching: requests that arrive together go through one forward pass on a single model thread.

One `MicroBatcher` owns the model. Request handlers decode their image in a thread pool, then `submit` the
prepared image to a bounded queue and await the returned future; the model thread takes the first waiting image,
collects up to `max_batch` (waiting at most `max_wait_ms` for images that are still being decoded), runs the batch
and post-processes each image with its own options. A request whose client went away cancels its future
(`abandon`); the model thread skips cancelled jobs, so abandoned work never reaches the model.

Results equal a direct `Predictor` call on the same image: only images of the same resized shape share a forward
pass, so no image is ever padded (padding changes a DETR's outputs, see docs/inference.md), and each image is
post-processed alone. The model thread never waits when no other request is on its way, so a lone request pays no
batching delay.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from egtr.inference import Predictor, PreparedImage
from egtr.inference.scene_graph import SceneGraph

logger = logging.getLogger(__name__)


class QueueFull(RuntimeError):
    """The bounded queue holds `max_queue` images already; `retry_after_s` estimates when there is room."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass
class _Job:
    prepared: PreparedImage
    options: dict[str, Any]
    future: Future
    submitted: float = 0.0  # time.perf_counter() at submit


@dataclass(frozen=True)
class Result:
    """What the model thread answers for one image: its graph, how long it waited in the queue, and the model time
    spent on it (the forward pass of its batch plus its own post-processing), in seconds."""

    graph: SceneGraph
    queue_s: float
    model_s: float
    batch_size: int


_STOP = object()


class MicroBatcher:
    """The single model worker of a server process.

    Args:
        predictor: the loaded model; only this worker's thread calls it once `start` has run.
        max_batch: most images per forward pass.
        max_wait_ms: longest wait for more images once one is ready, spent only while other requests are still
            being decoded.
        max_queue: most images waiting for the model (the one being computed not counted); more are refused.
    """

    def __init__(
        self, predictor: Predictor, max_batch: int = 4, max_wait_ms: float = 10.0, max_queue: int = 32
    ) -> None:
        if max_batch < 1 or max_queue < 1 or max_wait_ms < 0:
            raise ValueError(
                f"max_batch and max_queue must be >= 1 and max_wait_ms >= 0, got {max_batch}, {max_queue}, "
                f"{max_wait_ms}"
            )
        self.predictor = predictor
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000
        self.max_queue = max_queue
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._incoming = 0  # requests between "body received" and `submit` (decoding)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.ready = threading.Event()
        self.batches = 0  # forward passes run
        self.images = 0  # images run
        self.abandoned = 0  # images dropped before the model because their client went away
        self._seconds_per_image = 1.0  # running estimate, for Retry-After

    # ------------------------------------------------------------------ lifecycle
    def start(self, warmup: PreparedImage | None = None) -> None:
        """Start the model thread; it runs `warmup` once (if given) before it sets `ready`."""
        if self._thread is not None:
            raise RuntimeError("the batcher is already running")
        self._thread = threading.Thread(target=self._run, args=(warmup,), name="egtr-model", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Finish the queued images, then end the model thread."""
        if self._thread is None:
            return
        self._queue.put(_STOP)  # blocking put: the stop marker always gets in behind the queued images
        self._thread.join(timeout_s)
        self._thread = None

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    # ------------------------------------------------------------------ request side
    @contextlib.contextmanager
    def incoming(self) -> Iterator[None]:
        """Mark a request as on its way (decoding) so that the model thread may wait for it to join a batch."""
        with self._lock:
            self._incoming += 1
        try:
            yield
        finally:
            with self._lock:
                self._incoming -= 1

    def submit(self, prepared: PreparedImage, options: dict[str, Any]) -> Future:
        """Queue one image; the future resolves to its `Result` (or to the model's exception).

        Raises:
            QueueFull: `max_queue` images are already waiting.
        """
        self.predictor.options.replace(
            **options
        )  # a misspelt option fails here, in the caller, not in the model thread
        job = _Job(prepared, options, Future(), time.perf_counter())
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            wait = (self.max_queue + 1) * self._seconds_per_image  # until the queue has drained
            raise QueueFull(f"{self.max_queue} images are waiting for the model", max(1, round(wait))) from None
        return job.future

    def abandon(self, future: Future) -> bool:
        """Drop a submitted image whose client went away; False if the model thread has already taken it."""
        if not future.cancel():
            return False
        with self._lock:
            self.abandoned += 1
        return True

    # ------------------------------------------------------------------ model thread
    def _run(self, warmup: PreparedImage | None) -> None:
        if warmup is not None:
            started = time.perf_counter()
            self.predictor.postprocess(self.predictor.forward([warmup]), [warmup])
            logger.info("model warmed up in %.2f s", time.perf_counter() - started)
        self.ready.set()
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                break
            jobs = [first]
            deadline = time.monotonic() + self.max_wait_s
            while len(jobs) < self.max_batch:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or not self._more_on_the_way():
                        break
                    try:
                        job = self._queue.get(timeout=min(remaining, 0.002))
                    except queue.Empty:
                        continue
                if job is _STOP:
                    stopping = True
                    break
                jobs.append(job)
            self._run_jobs(jobs)

    def _more_on_the_way(self) -> bool:
        with self._lock:
            return self._incoming > 0

    def _run_jobs(self, jobs: list[_Job]) -> None:
        by_shape: dict[tuple[int, ...], list[_Job]] = {}
        # From here on a job can no longer be abandoned; one that already was is skipped.
        for job in (job for job in jobs if job.future.set_running_or_notify_cancel()):
            by_shape.setdefault(tuple(job.prepared.pixel_values.shape), []).append(job)
        for group in by_shape.values():
            started = time.perf_counter()
            try:
                output = self.predictor.forward([job.prepared for job in group])
                forward_s = time.perf_counter() - started
                for index, job in enumerate(group):
                    begin = time.perf_counter()
                    graph = self.predictor.postprocess(output.image(index), [job.prepared], **job.options)[0]
                    model_s = forward_s + time.perf_counter() - begin
                    job.future.set_result(Result(graph, started - job.submitted, model_s, len(group)))
            except Exception as error:  # the model failed: every waiting request gets the error, none hangs
                logger.exception("forward pass of %d image(s) failed", len(group))
                for job in group:
                    if not job.future.done():
                        job.future.set_exception(error)
            elapsed = time.perf_counter() - started
            self._seconds_per_image = 0.8 * self._seconds_per_image + 0.2 * elapsed / len(group)
            self.batches += 1
            self.images += len(group)
