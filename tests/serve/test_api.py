"""Every endpoint of `egtr serve` and every kind of bad input, over real HTTP against a uvicorn server."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from tests.serve.conftest import ASTRONAUT, COFFEE, raw_request, read_answer, sibling, wait_until_ready
from tests.test_inputs import _png_header_only

from egtr.images import load_image
from egtr.serve import ServeSettings, create_app, running_server


def png_bytes(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 128, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_raw_body_answer_is_exactly_the_predictor_json(client, predictor):
    answer = client.post("/v1/scene-graphs", content=ASTRONAUT.read_bytes(), headers={"content-type": "image/jpeg"})
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    expected = predictor(load_image(ASTRONAUT)).to_dict()  # what `egtr predict` writes, less the file path
    assert answer.json() == expected
    assert answer.json()["image_path"] is None  # nothing about the client's files is echoed
    timing = answer.headers["server-timing"]  # where the time went, e.g. "read;dur=0.05, decode;dur=3.1, ..."
    for part in ("read", "decode", "queue", "model", "encode"):
        assert f"{part};dur=" in timing
    assert 'batch;desc="1 image(s)"' in timing


def test_multipart_upload_with_options(client, predictor):
    options = {"top_k": 3, "score_threshold": 0.0, "graph_constraint": "false", "object_threshold": 0.5}
    answer = client.post("/v1/scene-graphs", params=options, files={"image": ("c.jpg", COFFEE.read_bytes())})
    assert answer.status_code == 200
    expected = predictor(load_image(COFFEE), top_k=3, graph_constraint=False, object_threshold=0.5).to_dict()
    assert answer.json() == expected
    assert len(answer.json()["relations"]) == 3


def test_the_file_name_and_content_type_are_ignored(client):
    # a PNG sent under a .txt name and a JPEG content type: the bytes decide
    answer = client.post("/v1/scene-graphs", files={"image": ("notes.txt", png_bytes(64, 48), "image/jpeg")})
    assert answer.status_code == 200
    assert answer.json()["image_size"] == {"height": 48, "width": 64}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"top_k": 0}, "top_k"),
        ({"top_k": "many"}, "top_k"),
        ({"score_threshold": 1.5}, "score_threshold"),
        ({"score_threshold": "nan"}, "score_threshold"),
        ({"graph_constraint": "maybe"}, "graph_constraint"),
        ({"object_threshold": -0.1}, "object_threshold"),
        ({"topk": 5}, "topk"),  # misspelt: an error, not silently the default
    ],
)
def test_bad_option_values_are_422_naming_the_option(client, params, field):
    answer = client.post("/v1/scene-graphs", params=params, content=ASTRONAUT.read_bytes())
    assert answer.status_code == 422
    assert answer.json()["error"] == "bad_option"
    assert answer.json()["message"].startswith(f"{field}: ")


def test_bad_drawing_format_is_422(client):
    answer = client.post("/v1/scene-graphs/drawing", params={"format": "gif"}, content=ASTRONAUT.read_bytes())
    assert answer.status_code == 422 and answer.json()["message"].startswith("format: ")


def _bmp_header_only() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (30, 20)).save(buffer, format="BMP")
    return buffer.getvalue()[:60]


def _pdf_like() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PDF")
    return buffer.getvalue()


def _icon() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buffer, format="ICO")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"", 400, "empty_body"),
        (b"hello, this is not an image", 415, "not_an_image"),
        (_pdf_like(), 415, "not_an_image"),
        (_icon(), 415, "unsupported_format"),
        (ASTRONAUT.read_bytes()[:3000], 400, "corrupt_image"),
        (_bmp_header_only(), 400, "corrupt_image"),
    ],
    ids=["empty", "text", "pdf", "icon", "truncated-jpeg", "truncated-bmp"],
)
def test_bad_images_are_4xx_json_naming_the_problem(client, body, status, code):
    for endpoint in ("/v1/scene-graphs", "/v1/scene-graphs/drawing"):
        answer = client.post(endpoint, content=body)
        assert answer.status_code == status, answer.text
        assert answer.json()["error"] == code
        assert answer.json()["message"]


def test_multipart_without_an_image_field_is_400(client):
    answer = client.post("/v1/scene-graphs", files={"picture": ("a.jpg", ASTRONAUT.read_bytes())})
    assert answer.status_code == 400
    assert answer.json() == {"error": "missing_image", "message": "a multipart upload needs a file field named 'image'"}
    answer = client.post(
        "/v1/scene-graphs", content=b"--xyz\r\nbroken", headers={"content-type": "multipart/form-data; boundary=xyz"}
    )
    assert answer.status_code == 400 and answer.json()["error"] in ("bad_request", "missing_image")


def test_limits_body_size_and_pixels(predictor):
    settings = ServeSettings(max_upload_bytes=50_000, max_pixels=100 * 100, warmup=False)
    with running_server(create_app(predictor, settings)) as url, httpx.Client(base_url=url, timeout=60) as client:
        answer = client.post("/v1/scene-graphs", content=ASTRONAUT.read_bytes())  # 100 kB with Content-Length
        assert answer.status_code == 413 and answer.json()["error"] == "body_too_large"

        def chunks():  # no Content-Length: refused while streaming
            for _ in range(20):
                yield b"x" * 10_000

        answer = client.post("/v1/scene-graphs", content=chunks())
        assert answer.status_code == 413 and answer.json()["error"] == "body_too_large"
        # a small file of too many pixels (decompression bomb): refused from the header, before decoding
        answer = client.post("/v1/scene-graphs", content=png_bytes(101, 100))
        assert answer.status_code == 413 and answer.json()["error"] == "too_many_pixels"
        assert answer.json()["message"].startswith("upload: 101x100 = 0.0101 megapixels, above the limit of 0.01")
        assert client.post("/v1/scene-graphs", content=png_bytes(100, 100)).status_code == 200


def test_max_pixels_above_pillows_own_limit_governs_uploads(predictor, client, tmp_path):
    huge = tmp_path / "huge.png"
    _png_header_only(huge, 18_000, 10_000)  # 180 megapixels, above Pillow's own 178,956,970; truncated pixel data
    answer = client.post("/v1/scene-graphs", content=huge.read_bytes())  # the default --max-pixels: 100 megapixels
    assert answer.status_code == 413 and answer.json()["error"] == "too_many_pixels"
    assert answer.json()["message"] == (
        "upload: 18000x10000 = 180.0 megapixels, above the limit of 100 megapixels "
        "(raise it with --max-pixels / max_pixels=)"
    )
    settings = ServeSettings(max_pixels=200_000_000, warmup=False)
    with running_server(create_app(predictor, settings)) as url, httpx.Client(base_url=url, timeout=60) as raised:
        answer = raised.post("/v1/scene-graphs", content=huge.read_bytes())
    # decoded under the raised limit (and found truncated), not refused by Pillow's
    assert answer.status_code == 400 and answer.json()["error"] == "corrupt_image", answer.text


def test_a_stalled_upload_is_cut_with_408(predictor):
    settings = ServeSettings(body_timeout_s=0.5, warmup=False)
    head = "POST /v1/scene-graphs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000"
    with (
        running_server(create_app(predictor, settings)) as url,
        raw_request(url, head, ASTRONAUT.read_bytes()[:1000]) as connection,  # and then nothing more
    ):
        answer = read_answer(connection)  # until the server closes the connection
    head_lines, _, body = answer.partition(b"\r\n\r\n")
    assert head_lines.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert json.loads(body) == {
        "error": "body_timeout",
        "message": "the request body did not arrive in full within 0.5 s (1,000 bytes came)",
    }


def test_drawing_png_and_svg(client):
    png = client.post("/v1/scene-graphs/drawing", content=COFFEE.read_bytes(), params={"top_k": 5})
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(png.content)).size[0] > 400
    svg = client.post("/v1/scene-graphs/drawing", content=png_bytes(64, 48), params={"format": "svg", "top_k": 3})
    assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml")
    assert b"<svg" in svg.content[:2000]


def test_model_description(client, predictor):
    answer = client.get("/v1/model")
    assert answer.status_code == 200
    info = answer.json()
    assert info["model"] == "reference" and info["ready"] is True
    assert info["class_names"] == predictor.class_names and info["predicate_names"] == predictor.predicate_names
    assert info["config"]["backbone"] == "resnet18" and info["config"]["num_queries"] == 30
    assert info["preprocessing"]["shortest_edge"] == 112 and info["preprocessing"]["longest_edge"] == 160
    # the hash of the weights file, as `sha256sum` prints it
    weights_file = Path(info["source"]["weights_file"])
    assert info["weights_sha256"] == hashlib.sha256(weights_file.read_bytes()).hexdigest()
    assert info["weights_sha256_of"] == "file" and info["versions"]["egtr"]
    # a model built in memory is hashed by its state dict: other weights, another hash
    from egtr.serve.settings import model_info, state_dict_sha256

    in_memory = model_info(sibling(predictor), ServeSettings())
    assert in_memory["weights_sha256_of"] == "state_dict"
    assert in_memory["weights_sha256"] == state_dict_sha256(predictor.model)
    assert state_dict_sha256(type(predictor.model)(predictor.config)) != in_memory["weights_sha256"]


def test_health_readiness_page_and_openapi(client):
    assert client.get("/healthz").json()["status"] == "ok"
    assert client.get("/readyz").json() == {"status": "ready"}
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "/static/app.js" in page.text and "https://" not in page.text.split("<footer")[0]  # no CDN
    for asset in ("/static/app.js", "/static/style.css"):
        assert client.get(asset).status_code == 200
    assert client.get("/examples/coffee.jpg").content == COFFEE.read_bytes()
    for name in ("../cli.py", "..%2F..%2Fcli.py", "/etc/passwd", "README.md"):
        assert client.get(f"/examples/{name}").status_code == 404
    assert client.get("/static/../cli.py").status_code == 404
    schema = client.get("/openapi.json").json()
    assert {"/v1/scene-graphs", "/v1/scene-graphs/drawing", "/v1/model", "/v1/schema"} <= set(schema["paths"])
    missing = client.get("/v2/anything")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    wrong_method = client.get("/v1/scene-graphs")
    assert wrong_method.status_code == 405 and wrong_method.json()["error"] == "method_not_allowed"


def test_head_on_the_page_and_the_health_checks(client):
    for path in ("/", "/healthz", "/readyz"):
        answer = client.head(path)
        assert answer.status_code == 200, path
        assert answer.content == b""
    assert client.head("/v1/scene-graphs").status_code == 405  # the API itself is not for HEAD


def test_readiness_waits_for_the_warm_up(predictor):
    import threading

    gate = threading.Event()
    slow = sibling(predictor)
    forward = slow.forward
    slow.forward = lambda batch: (gate.wait(30), forward(batch))[1]  # type: ignore[method-assign]
    with running_server(create_app(slow, ServeSettings())) as url, httpx.Client(base_url=url, timeout=60) as client:
        answer = client.get("/readyz")
        assert answer.status_code == 503 and answer.json()["error"] == "warming_up"
        assert client.head("/readyz").status_code == 503
        assert client.get("/healthz").status_code == 200  # alive while warming up
        gate.set()
        wait_until_ready(client)


def test_api_key(predictor):
    key = "k" * 12 + "-secret-7"
    settings = ServeSettings(api_key=key, warmup=False)
    with running_server(create_app(predictor, settings)) as url, httpx.Client(base_url=url, timeout=60) as client:
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": f"Basic {key}"}):
            answer = client.post("/v1/scene-graphs", content=ASTRONAUT.read_bytes(), headers=headers)
            assert answer.status_code == 401 and answer.json()["error"] == "unauthorized"
            assert answer.headers["www-authenticate"] == "Bearer"
            assert client.get("/v1/model", headers=headers).status_code == 401
            assert client.get("/v1/schema", headers=headers).status_code == 401
        good = {"authorization": f"Bearer {key}"}
        assert client.post("/v1/scene-graphs", content=ASTRONAUT.read_bytes(), headers=good).status_code == 200
        assert client.get("/v1/model", headers=good).status_code == 200
        assert client.get("/v1/schema", headers=good).status_code == 200
        assert client.get("/healthz").status_code == 200 and client.get("/").status_code == 200  # open


def test_cors_is_off_by_default_and_on_for_given_origins(client, predictor):
    origin = {"origin": "https://example.org"}
    refused = client.get("/v1/schema", headers=origin)
    assert refused.status_code == 403 and refused.json()["error"] == "cross_origin"
    assert "access-control-allow-origin" not in refused.headers
    settings = ServeSettings(cors_origins=("https://example.org",), warmup=False)
    with running_server(create_app(predictor, settings)) as url, httpx.Client(base_url=url, timeout=60) as other:
        allowed = other.get("/v1/schema", headers=origin)
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://example.org"
        evil = other.get("/v1/schema", headers={"origin": "https://evil"})
        assert evil.status_code == 403 and "access-control-allow-origin" not in evil.headers
    with pytest.raises(ValueError, match=r"--cors-origin https://example\.org/: not an origin"):
        ServeSettings(cors_origins=("https://example.org/",))


@pytest.mark.parametrize(
    ("headers", "files"),
    [
        ({"content-type": "text/plain"}, None),  # a fetch() without preflight
        ({}, {"image": ("x.jpg", b"not an image", "image/jpeg")}),  # a <form enctype=multipart/form-data>
    ],
    ids=["text-plain", "form-multipart"],
)
def test_pages_of_other_origins_cannot_make_the_server_work(client, server_url, headers, files):
    before = client.get("/healthz").json()["images"]
    for origin in ("http://attacker.example", "null", server_url.replace("127.0.0.1", "localhost")):
        content = None if files else b"not an image"  # decoding it would answer 415: refused before that
        answer = client.post("/v1/scene-graphs", headers={**headers, "origin": origin}, content=content, files=files)
        assert answer.status_code == 403, answer.text
        assert answer.json() == {
            "error": "cross_origin",
            "message": f"requests from pages of {origin} are refused; allow that origin with --cors-origin {origin}",
        }
    body = ASTRONAUT.read_bytes()
    assert (
        client.post("/v1/scene-graphs", content=body, headers={**headers, "origin": "http://x.test"}).status_code == 403
    )
    assert client.get("/healthz").json()["images"] == before  # no work done
    own = client.post("/v1/scene-graphs", content=body, headers={"origin": server_url})  # the page itself
    assert own.status_code == 200


def test_only_the_servers_own_host_names_are_answered(client, predictor):
    port = client.base_url.port
    for host in (f"attacker.example:{port}", "attacker.example", "127.0.0.1.attacker.example", ""):
        answer = client.get("/v1/model", headers={"host": host})  # a DNS-rebinding page sends its own name
        assert answer.status_code == 400 and answer.json()["error"] == "host_not_allowed", host
        assert "weights" not in answer.text
    for host in (f"localhost:{port}", "LOCALHOST", f"127.0.0.1:{port}", "127.0.0.1", f"[::1]:{port}", "[::1]"):
        assert client.get("/v1/model", headers={"host": host}).status_code == 200, host
    settings = ServeSettings(allowed_hosts=("egtr.example.org", "*.lab.example"), warmup=False)
    with running_server(create_app(predictor, settings)) as url, httpx.Client(base_url=url, timeout=60) as proxied:
        for host, status in (("egtr.example.org", 200), ("gpu1.lab.example:8000", 200), ("example.org", 400)):
            assert proxied.get("/healthz", headers={"host": host}).status_code == status, host


def test_host_names_of_each_kind_of_address():
    from egtr.serve.security import AllowedHosts

    public = AllowedHosts.for_bind("192.168.1.5")
    assert public.allows("192.168.1.5:8000") and not public.allows("localhost") and not public.allows("10.0.0.1")
    everywhere = AllowedHosts.for_bind("0.0.0.0")  # its addresses are not known: any address, and loopback names
    assert all(map(everywhere.allows, ("10.1.2.3:8000", "[fe80::1]:80", "localhost:8000")))
    assert not everywhere.allows("attacker.example:8000")
    assert AllowedHosts.for_bind("::1").allows("[::1]:8000") and AllowedHosts.for_bind("::", ("*",)).allows("x.y")


def test_every_answer_carries_the_security_headers(client, predictor):
    answers = [
        client.get("/"),
        client.get("/static/app.js"),
        client.get("/v1/model"),
        client.get("/v2/nothing"),
        client.post("/v1/scene-graphs", content=b"nope"),
        client.get("/healthz", headers={"origin": "http://attacker.example"}),
        client.get("/healthz", headers={"host": "attacker.example"}),
    ]
    settings = ServeSettings(max_upload_bytes=10, warmup=False)
    with running_server(create_app(predictor, settings)) as url, httpx.Client(base_url=url, timeout=60) as small:
        answers.append(small.post("/v1/scene-graphs", content=ASTRONAUT.read_bytes()))  # 413 from a middleware
    assert [answer.status_code for answer in answers] == [200, 200, 200, 404, 415, 403, 400, 413]
    for answer in answers:
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["referrer-policy"] == "no-referrer"
        policy = answer.headers["content-security-policy"]
        assert "script-src 'self';" in policy and "frame-ancestors 'none'" in policy and "unsafe" not in policy
    # the page lives with that policy: no inline script or style (tests/serve/test_browser.py runs it)
    page = answers[0].text
    assert "<script>" not in page and "style=" not in page and 'setAttribute("style"' not in answers[1].text


def test_settings_are_checked():
    with pytest.raises(ValueError, match="max_batch"):
        ServeSettings(max_batch=0)
    with pytest.raises(ValueError, match="at least 16"):
        ServeSettings(api_key="short")


def test_schema_endpoint_matches_the_package_file(client):
    from egtr.schemas import scene_graph_schema

    assert client.get("/v1/schema").json() == scene_graph_schema()
    json.dumps(scene_graph_schema())


def test_the_service_through_openvino_answers_what_pytorch_answers(predictor, exported_reference):
    pytest.importorskip("openvino", reason="the openvino extra is not installed: pip install 'egtr[openvino]'")
    from egtr.inference import Predictor

    options = {"size": 112, "max_size": 160, "top_k": 15}
    exported = Predictor.from_pretrained(exported_reference, runtime="openvino", device="cpu", **options)
    with (
        running_server(create_app(exported, ServeSettings(warmup=False))) as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        answer = client.post("/v1/scene-graphs", content=ASTRONAUT.read_bytes())
        model = client.get("/v1/model").json()
    assert answer.status_code == 200
    expected = predictor(load_image(ASTRONAUT)).to_dict()
    got = answer.json()
    assert [(r["subject"], r["predicate"], r["object"]) for r in got["relations"]] == [
        (r["subject"], r["predicate"], r["object"]) for r in expected["relations"]
    ]
    np.testing.assert_allclose(
        [r["score"] for r in got["relations"]], [r["score"] for r in expected["relations"]], atol=1e-4
    )
    assert model["runtime"]["runtime"] == "openvino" and model["config"]["parameters"] is None
    assert model["weights_sha256"] == predictor.source["weights_sha256"]  # the exported model's source weights
