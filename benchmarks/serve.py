"""Serving overhead and micro-batching gain of `egtr serve`, against direct `Predictor` calls in the same run.

Loopback only, bounded: a server on an ephemeral 127.0.0.1 port in this process, `--requests` requests per
concurrency level, each from a client thread (httpx). Reports latency p50/p95 and throughput at concurrency 1, 4
and 16; the serving overhead at concurrency 1 (server p50 minus direct p50, relative to the direct time); and the
gain of micro-batching (throughput at the highest concurrency with --max-batch against --max-batch 1); and what
happens when the queue is full (--overload C: C requests at once against --max-queue 4, --max-batch 1: how many are
answered, how many refused with 503 and how fast, with which Retry-After). Not a test.

    python benchmarks/serve.py --model tests/fixtures/reference/artifact --size 480 --max-size 640
    python benchmarks/serve.py --model /work/demo_model/model --device cuda --requests 64   # on a GPU
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from egtr import Predictor, tune_cpu_allocator  # noqa: E402
from egtr.serve import ServeSettings, create_app, running_server  # noqa: E402


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def latency(seconds: list[float]) -> dict[str, float] | None:
    return {"p50": 1000 * statistics.median(seconds), "p95": 1000 * percentile(seconds, 0.95)} if seconds else None


def summary(latencies: list[float], wall: float) -> dict[str, float]:
    return {
        "p50_ms": 1000 * statistics.median(latencies),
        "p95_ms": 1000 * percentile(latencies, 0.95),
        "images_per_s": len(latencies) / wall,
    }


def direct(predictor: Predictor, body: bytes, requests: int, batch: int) -> dict[str, float]:
    """Direct calls of `batch` images each: decode the same bytes and predict (the ceiling of batching)."""
    latencies = []
    started = time.perf_counter()
    for _ in range(max(1, requests // batch)):
        begin = time.perf_counter()
        pictures = [Image.open(io.BytesIO(body)).convert("RGB") for _ in range(batch)]
        MODEL_THREAD.submit(predictor.predict_batch, pictures).result()
        latencies.append(time.perf_counter() - begin)
    wall = time.perf_counter() - started
    return summary(latencies, wall) | {"images_per_s": batch * len(latencies) / wall}


# Direct calls run on one worker thread, as the server's model does: on a loaded 2-core machine a forward pass
# in the main thread was measured up to 8x slower than the same pass in a worker thread (OpenMP threads spinning
# on a contended core), which would flatter the server.
MODEL_THREAD = ThreadPoolExecutor(1, thread_name_prefix="direct-model")


def paired(predictor: Predictor, url: str, body: bytes, requests: int) -> tuple[dict, dict]:
    """Concurrency 1: a direct call and a served request in turn, so that both see the same machine load."""
    direct_times, served_times, server_parts = [], [], []
    with httpx.Client(base_url=url, timeout=600) as client:
        for _ in range(requests):
            begin = time.perf_counter()
            MODEL_THREAD.submit(lambda: predictor(Image.open(io.BytesIO(body)).convert("RGB"))).result()
            direct_times.append(time.perf_counter() - begin)
            begin = time.perf_counter()
            answer = client.post("/v1/scene-graphs", content=body)
            answer.raise_for_status()
            answer.json()
            served_times.append(time.perf_counter() - begin)
            server_parts.append(parse_server_timing(answer.headers["server-timing"]))
    parts = {name: statistics.median(item[name] for item in server_parts) for name in server_parts[0]}
    return (
        summary(direct_times, sum(direct_times)),
        summary(served_times, sum(served_times)) | {f"server {name} ms": value for name, value in parts.items()},
    )


def parse_server_timing(header: str) -> dict[str, float]:
    """ "read;dur=0.05, decode;dur=3.10, ..." -> {"read": 0.05, "decode": 3.1, ...} (milliseconds)."""
    parts = {}
    for item in header.split(","):
        name, _, rest = item.strip().partition(";")
        if rest.startswith("dur="):
            parts[name] = float(rest[4:])
    return parts


def served(url: str, body: bytes, requests: int, concurrency: int) -> dict[str, float]:
    local = threading.local()

    def send(_: int) -> float:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=url, timeout=600)
        begin = time.perf_counter()
        answer = local.client.post("/v1/scene-graphs", content=body)
        answer.raise_for_status()
        answer.json()
        return time.perf_counter() - begin

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(send, range(concurrency)))  # warm the connections
        started = time.perf_counter()
        latencies = list(pool.map(send, range(requests)))
        wall = time.perf_counter() - started
    return summary(latencies, wall)


def overload(predictor: Predictor, body: bytes, clients: int, max_queue: int = 4) -> dict[str, object]:
    """`clients` requests at once against a queue of `max_queue`: the answered ones and the refused ones (503)."""
    outcomes: list[tuple[int, float, str | None]] = []
    settings = ServeSettings(max_batch=1, max_queue=max_queue)
    with running_server(create_app(predictor, settings)) as url, httpx.Client(base_url=url, timeout=600) as client:
        while client.get("/readyz").status_code != 200:
            time.sleep(0.05)
        start = threading.Barrier(clients)

        def send(_: int) -> tuple[int, float, str | None]:
            with httpx.Client(base_url=url, timeout=600) as own:
                start.wait()
                begin = time.perf_counter()
                answer = own.post("/v1/scene-graphs", content=body)
                return answer.status_code, time.perf_counter() - begin, answer.headers.get("retry-after")

        with ThreadPoolExecutor(clients) as pool:
            outcomes = list(pool.map(send, range(clients)))
    answered = [seconds for status, seconds, _ in outcomes if status == 200]
    refused = [seconds for status, seconds, _ in outcomes if status == 503]
    return {
        "clients": clients,
        "max_queue": max_queue,
        "answered": len(answered),
        "refused_503": len(refused),
        "other": len(outcomes) - len(answered) - len(refused),
        "answered_ms": latency(answered),
        "refused_ms": latency(refused),
        "retry_after_s": sorted({value for status, _, value in outcomes if status == 503}),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(ROOT / "tests/fixtures/reference/artifact"))
    parser.add_argument("--image", default=str(ROOT / "src/egtr/assets/astronaut.jpg"))
    parser.add_argument("--size", type=int, default=None, help="shorter side (default: the model's)")
    parser.add_argument("--max-size", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--requests", type=int, default=24, help="requests per concurrency level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--overload", type=int, default=16, help="requests at once against a queue of 4 (0: skip)")
    parser.add_argument("--out", default=None, help="also write the numbers as JSON here")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    top = max(args.concurrency)
    tune_cpu_allocator()
    predictor = Predictor.from_pretrained(
        args.model, size=args.size, max_size=args.max_size, device=args.device, dtype=args.dtype
    )
    body = Path(args.image).read_bytes()
    for _ in range(3):
        MODEL_THREAD.submit(predictor, Image.open(io.BytesIO(body))).result()  # warm-up
    results: dict[str, dict] = {}
    for max_batch in (args.max_batch, 1):
        settings = ServeSettings(max_batch=max_batch, max_queue=max(64, 2 * max(args.concurrency)))
        with running_server(create_app(predictor, settings)) as url:
            with httpx.Client(base_url=url) as client:
                while client.get("/readyz").status_code != 200:
                    time.sleep(0.05)
            if max_batch == 1:
                results[f"served c={top} max-batch 1"] = served(url, body, args.requests, top)
                continue
            results["direct c=1"], results[f"served c=1 max-batch {max_batch}"] = paired(
                predictor, url, body, args.requests
            )
            results[f"direct batch {max_batch}"] = direct(predictor, body, args.requests, max_batch)
            for concurrency in [c for c in args.concurrency if c != 1]:
                results[f"served c={concurrency} max-batch {max_batch}"] = served(url, body, args.requests, concurrency)

    preprocessing = predictor.preprocessor
    print(
        f"model {args.model}, image {Path(args.image).name} -> "
        f"{preprocessing.shortest_edge}/{preprocessing.longest_edge}, "
        f"{predictor.device} {args.dtype}, {args.threads} threads, {args.requests} requests per row"
    )
    print(f"| {'what':<28} | p50 ms | p95 ms | images/s |\n|---|---|---|---|")
    for name, row in results.items():
        print(f"| {name:<28} | {row['p50_ms']:6.1f} | {row['p95_ms']:6.1f} | {row['images_per_s']:8.2f} |")
    direct_p50 = results["direct c=1"]["p50_ms"]
    served_p50 = results[f"served c=1 max-batch {args.max_batch}"]["p50_ms"]
    gain = (
        results[f"served c={top} max-batch {args.max_batch}"]["images_per_s"]
        / results[f"served c={top} max-batch 1"]["images_per_s"]
    )
    overhead = 100 * (served_p50 / direct_p50 - 1)
    print(f"serving overhead at concurrency 1: {served_p50 - direct_p50:+.1f} ms = {overhead:+.1f}% of the direct call")
    row = results[f"served c=1 max-batch {args.max_batch}"]
    inside = {name.split()[1]: value for name, value in row.items() if name.startswith("server ")}
    work = sum(value for name, value in inside.items() if name != "model")
    print(
        "inside the server at concurrency 1 (median ms): "
        + ", ".join(f"{name} {value:.1f}" for name, value in inside.items())
        + f" -> {work:.1f} ms besides the model = {100 * work / inside['model']:.1f}% of the model time"
    )
    print(f"micro-batching gain at concurrency {top}: x{gain:.2f} throughput (max-batch {args.max_batch} vs 1)")
    if args.overload:
        full = overload(predictor, body, args.overload)
        results["queue full"] = full
        print(f"queue full: {json.dumps(full)}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
