"""Micro-batching under concurrent requests: all answered, equal to sequential `Predictor` calls, none lost, and
503 with Retry-After when the queue is full."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from PIL import Image, ImageOps
from tests.serve.conftest import ASTRONAUT, COFFEE, gated, raw_request, wait_for, wait_until_ready

from egtr.images import load_image
from egtr.serve import ServeSettings, create_app, running_server


def image_bytes(picture: Image.Image) -> bytes:
    import io

    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")  # lossless: the server decodes exactly these pixels
    return buffer.getvalue()


def assert_same_graph(served: dict, expected: dict) -> None:
    """Same objects, relations and order; numbers equal up to float32 rounding (a batch of several images sums in
    another order than a batch of one; with --max-batch 1 they are bit-identical, see test_api)."""
    assert served["image_size"] == expected["image_size"]
    assert [(o["label"], o["query"]) for o in served["objects"]] == [
        (o["label"], o["query"]) for o in expected["objects"]
    ]
    keys = ("subject", "object", "predicate", "predicate_name")
    assert [[r[k] for k in keys] for r in served["relations"]] == [[r[k] for k in keys] for r in expected["relations"]]
    for ours, theirs in zip(served["relations"], expected["relations"]):
        assert ours["score"] == pytest.approx(theirs["score"], rel=1e-4, abs=1e-7)
    for ours, theirs in zip(served["objects"], expected["objects"]):
        assert ours["box"] == pytest.approx(theirs["box"], abs=1e-2)


@pytest.mark.slow
def test_32_simultaneous_requests_are_batched_and_equal_sequential_prediction(predictor):
    astronaut, coffee = load_image(ASTRONAUT), load_image(COFFEE)
    # two shapes, two images each: images of one shape can share a forward pass
    pictures = [picture for original in (astronaut, coffee) for picture in (original, ImageOps.mirror(original))]
    expected = [predictor(picture).to_dict() for picture in pictures]  # sequential, one at a time
    bodies = [image_bytes(picture) for picture in pictures]
    requests = [index % len(pictures) for index in range(32)]

    settings = ServeSettings(max_batch=8, max_wait_ms=20, max_queue=64)
    app = create_app(predictor, settings)
    with running_server(app) as url, httpx.Client(base_url=url, timeout=120) as client:
        wait_until_ready(client)

        def send(index: int) -> tuple[int, dict]:
            answer = client.post("/v1/scene-graphs", content=bodies[index])
            return index, answer.status_code, answer.json()

        with ThreadPoolExecutor(max_workers=32) as pool:  # 32 requests in flight together
            results = list(pool.map(send, requests))
        health = client.get("/healthz").json()

    assert len(results) == 32
    for index, status, body in results:
        assert status == 200, body
        assert_same_graph(body, expected[index])
    assert health["images"] == 32 and health["queued"] == 0  # every request ran once (warm-up not counted)
    assert health["batches"] < 32, "no two requests shared a forward pass"


def test_a_full_queue_answers_503_with_retry_after_and_loses_nothing(predictor):
    held = gated(predictor)
    settings = ServeSettings(max_batch=1, max_queue=2, warmup=False)
    body = ASTRONAUT.read_bytes()
    with running_server(create_app(held.predictor, settings)) as url, httpx.Client(base_url=url, timeout=120) as client:
        wait_until_ready(client)
        with ThreadPoolExecutor(max_workers=3) as pool:
            first = pool.submit(client.post, "/v1/scene-graphs", content=body)
            assert held.entered.wait(30)  # the model thread holds the first image
            queued = [pool.submit(client.post, "/v1/scene-graphs", content=body) for _ in range(2)]
            wait_for(lambda: client.get("/healthz").json()["queued"] == 2, "two requests reaching the queue")
            refused = client.post("/v1/scene-graphs", content=body)
            assert refused.status_code == 503
            assert refused.json()["error"] == "queue_full"
            assert int(refused.headers["retry-after"]) >= 1
            held.gate.set()
            answers = [first.result(60)] + [future.result(60) for future in queued]
        assert [answer.status_code for answer in answers] == [200, 200, 200]
        assert client.get("/healthz").json()["images"] == 3
        assert client.post("/v1/scene-graphs", content=body).status_code == 200  # room again


def test_work_of_clients_that_went_away_never_reaches_the_model(predictor):
    held = gated(predictor)
    settings = ServeSettings(max_batch=1, max_queue=8, warmup=False)
    body = ASTRONAUT.read_bytes()
    head = f"POST /v1/scene-graphs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}"
    with running_server(create_app(held.predictor, settings)) as url, httpx.Client(base_url=url, timeout=120) as client:
        with ThreadPoolExecutor(max_workers=1) as pool:
            first = pool.submit(client.post, "/v1/scene-graphs", content=body)
            assert held.entered.wait(30)  # the model thread holds the first image
            abandoned = [raw_request(url, head, body) for _ in range(4)]
            wait_for(lambda: client.get("/healthz").json()["queued"] == 4, "four requests reaching the queue")
            for connection in abandoned:  # the clients give up (a timeout, a closed tab)
                connection.close()
            wait_for(lambda: client.get("/healthz").json().get("abandoned") == 4, "the server noticing the four")
            held.gate.set()
            assert first.result(60).status_code == 200
        assert client.post("/v1/scene-graphs", content=body).status_code == 200
        assert client.get("/healthz").json()["images"] == 2
    assert held.images == [1, 1]  # the first and the last request: none of the abandoned four was computed
