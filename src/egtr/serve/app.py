"""The FastAPI application of `egtr serve`: `create_app(predictor, settings)`.

Endpoints (docs/serving.md): POST /v1/scene-graphs (JSON of `egtr predict`), POST /v1/scene-graphs/drawing
(PNG/SVG), GET /v1/model, GET /v1/schema, GET /healthz, GET /readyz, and the web page at / (static files shipped
in the package). Every error is a JSON body `{"error": code, "message": text}` with a 4xx/5xx status.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import io
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from egtr.inference import PredictionOptions, Predictor, PreparedImage
from egtr.inference.scene_graph import SceneGraph
from egtr.schemas import scene_graph_schema
from egtr.serve.batching import MicroBatcher, QueueFull, Result
from egtr.serve.images import ImageRejected, decode_image_bytes
from egtr.serve.limits import BodyLimits, BodyTimeout, BodyTooLarge
from egtr.serve.security import SECURITY_HEADERS, AllowedHosts, BrowserGuard, SecurityHeaders
from egtr.serve.settings import ServeSettings, model_info, resolve_max_batch
from egtr.version import __version__

logger = logging.getLogger(__name__)

STATIC = resources.files("egtr.serve") / "static"
ASSETS = resources.files("egtr") / "assets"
EXAMPLES = ("astronaut.jpg", "coffee.jpg")  # the only files /examples/ serves: no path is taken from a request
MAX_TOP_K = 1000
PREDICTION_OPTIONS = tuple(field.name for field in dataclasses.fields(PredictionOptions))


class ApiError(Exception):
    """An answer other than 200: `status`, a stable `code` and a message naming the problem."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status, headers=headers)


def prediction_options(
    top_k: Annotated[
        int | None, Query(ge=1, le=MAX_TOP_K, description="relations kept (default: the server's)")
    ] = None,
    score_threshold: Annotated[float | None, Query(ge=0, le=1, description="drop relations scoring lower")] = None,
    graph_constraint: Annotated[bool | None, Query(description="one predicate per subject/object pair")] = None,
    object_threshold: Annotated[
        float | None, Query(ge=0, le=1, description="also keep unrelated objects scoring at least this")
    ] = None,
) -> dict[str, Any]:
    """The options of `egtr predict`, as query parameters; those not given keep the server's defaults."""
    given = {
        "top_k": top_k,
        "score_threshold": score_threshold,
        "graph_constraint": graph_constraint,
        "object_threshold": object_threshold,
    }
    return {name: value for name, value in given.items() if value is not None}


def create_app(predictor: Predictor, settings: ServeSettings | None = None) -> FastAPI:
    """Build the service around a loaded `Predictor` (its model is used by one worker thread only).

    The model thread starts (and warms up) when the application starts (ASGI lifespan), and stops after the queued
    requests when it shuts down. The routes are the module's functions; they read what they need from the
    application's state (`request.app.state`: `predictor`, `settings`, `batcher`, `pool`, `model_info`). Returns
    the `fastapi.FastAPI` application.
    """
    settings = settings or ServeSettings()
    app = FastAPI(
        title="egtr scene graphs",
        version=__version__,
        description="Scene graph generation with EGTR (CVPR 2024). See docs/serving.md.",
        lifespan=lifespan,
        docs_url=None,  # Swagger UI and ReDoc load their scripts from a CDN; the service must work offline
        redoc_url=None,
    )
    app.state.predictor = predictor
    app.state.settings = settings
    max_batch = resolve_max_batch(settings.max_batch, predictor.device)
    app.state.batcher = MicroBatcher(predictor, max_batch, settings.max_wait_ms, settings.max_queue)
    app.state.model_info = {}  # GET /v1/model's body, computed on the first request (it hashes the weights)
    _add_middleware(app, settings)
    for error_type, handler in EXCEPTION_HANDLERS:
        app.add_exception_handler(error_type, handler)
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    return app


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start the decode threads and the model thread (after one warm-up pass); stop them after the queued requests."""
    state = app.state
    state.pool = ThreadPoolExecutor(state.settings.decode_workers, thread_name_prefix="egtr-decode")
    warmup = None
    if state.settings.warmup:  # one forward pass on a bundled photo before /readyz says ready
        example = ASSETS.joinpath(EXAMPLES[0]).read_bytes()
        warmup = await asyncio.to_thread(lambda: state.predictor.prepare(decode_image_bytes(example)))
    state.batcher.start(warmup)
    yield
    await asyncio.to_thread(state.batcher.stop)
    state.pool.shutdown(wait=True)


def _add_middleware(app: FastAPI, settings: ServeSettings) -> None:
    app.add_middleware(BodyLimits, max_bytes=settings.max_upload_bytes, timeout_s=settings.body_timeout_s)
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    # outermost (added last): a refused Host or Origin costs nothing, and every answer gets the headers
    hosts = AllowedHosts.for_bind(settings.host, settings.allowed_hosts)
    app.add_middleware(BrowserGuard, hosts=hosts, cors_origins=settings.cors_origins)
    app.add_middleware(SecurityHeaders)


# ---------------------------------------------------------------------- errors: one JSON shape
async def _api_error(request: Request, error: ApiError) -> JSONResponse:
    return error_response(error.status, error.code, error.message, error.headers)


async def _too_large(request: Request, error: BodyTooLarge) -> JSONResponse:
    return error_response(413, "body_too_large", str(error))


async def _too_slow(request: Request, error: BodyTimeout) -> JSONResponse:
    # the rest of the body is never read: the connection goes
    return error_response(408, "body_timeout", str(error), {"Connection": "close"})


async def _client_gone(request: Request, error: ClientDisconnect) -> JSONResponse:
    logger.info("%s %s: the client went away before its upload was complete", request.method, request.url.path)
    return error_response(499, "client_closed_request", "the client closed the connection")


async def _bad_option(request: Request, error: RequestValidationError) -> JSONResponse:
    problems = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"] if part not in ("query", "body"))
        problems.append(f"{field}: {item['msg']} (got {item.get('input')!r})")
    return error_response(422, "bad_option", "; ".join(problems))


async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
    code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "bad_request")
    return error_response(error.status_code, code, str(error.detail), getattr(error, "headers", None))


async def _internal_error(request: Request, error: Exception) -> JSONResponse:
    logger.error("%s %s failed", request.method, request.url.path, exc_info=error)
    # answered from outside every middleware (Starlette's last resort), so the headers are added here
    message = f"the server failed: {type(error).__name__}: {error}"
    return error_response(500, "internal_error", message, SECURITY_HEADERS)


# each handler takes the request and its exception type
ExceptionHandler = Callable[[Request, Any], Awaitable[JSONResponse]]
EXCEPTION_HANDLERS: tuple[tuple[type[Exception], ExceptionHandler], ...] = (
    (ApiError, _api_error),
    (BodyTooLarge, _too_large),
    (BodyTimeout, _too_slow),
    (ClientDisconnect, _client_gone),
    (RequestValidationError, _bad_option),
    (StarletteHTTPException, _http_error),
    (Exception, _internal_error),
)


# ---------------------------------------------------------------------- authentication
async def require_api_key(request: Request) -> None:
    """With `settings.api_key` set, every /v1 request must send `Authorization: Bearer <key>` (401 otherwise)."""
    api_key = request.app.state.settings.api_key
    if api_key is None:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    # compare_digest: the time taken does not tell how much of a guessed key was right
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
        raise ApiError(
            401, "unauthorized", "send the API key as 'Authorization: Bearer <key>'", {"WWW-Authenticate": "Bearer"}
        )


router = APIRouter()
protected = [Depends(require_api_key)]


# ---------------------------------------------------------------------- prediction
async def predict(
    request: Request, options: dict[str, Any], extra_options: tuple[str, ...] = ()
) -> tuple[PreparedImage, Result, dict[str, float]]:
    """Read, decode and queue the request's image; returns it, the model's result and the timings (seconds)."""
    check_query(request, PREDICTION_OPTIONS + extra_options)
    state = request.app.state
    batcher: MicroBatcher = state.batcher
    received = time.perf_counter()
    with batcher.incoming():  # the model thread may wait for this image to join a batch
        data = await read_image_bytes(request)
        loop = asyncio.get_running_loop()
        read = time.perf_counter()
        try:
            prepared = await loop.run_in_executor(
                state.pool, decode_and_prepare, state.predictor, data, state.settings.max_pixels
            )
        except ImageRejected as error:
            raise ApiError(error.status, error.code, error.message) from None
    decoded = time.perf_counter()
    try:
        future = batcher.submit(prepared, options)
    except QueueFull as error:
        raise ApiError(503, "queue_full", f"{error}; retry later", {"Retry-After": str(error.retry_after_s)}) from None
    result = await result_unless_abandoned(request, batcher, future)
    timings = {"read": read - received, "decode": decoded - read, "queue": result.queue_s, "model": result.model_s}
    return prepared, result, timings


def decode_and_prepare(predictor: Predictor, data: bytes, max_pixels: int) -> PreparedImage:
    return predictor.prepare(decode_image_bytes(data, max_pixels))


@router.post("/v1/scene-graphs", dependencies=protected, summary="scene graph of one image (JSON of egtr predict)")
async def scene_graph(request: Request, options: Annotated[dict, Depends(prediction_options)]) -> JSONResponse:
    _, result, timings = await predict(request, options)
    started = time.perf_counter()
    body = JSONResponse(result.graph.to_dict())  # the same dict `egtr predict` writes
    timings["encode"] = time.perf_counter() - started
    body.headers["Server-Timing"] = server_timing(timings, result.batch_size)
    return body


@router.post("/v1/scene-graphs/drawing", dependencies=protected, summary="the image with boxes | the graph")
async def drawing(
    request: Request,
    options: Annotated[dict, Depends(prediction_options)],
    format: Annotated[str, Query(pattern="^(png|svg)$", description="png or svg")] = "png",
    draw_relations: Annotated[int, Query(ge=1, le=200, description="relations drawn")] = 40,
) -> Response:
    prepared, result, timings = await predict(request, options, ("format", "draw_relations"))
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    picture = await loop.run_in_executor(
        request.app.state.pool, render_drawing, result.graph, prepared, format, draw_relations
    )
    timings["draw"] = time.perf_counter() - started
    media_type = "image/png" if format == "png" else "image/svg+xml"
    return Response(
        picture, media_type=media_type, headers={"Server-Timing": server_timing(timings, result.batch_size)}
    )


# ---------------------------------------------------------------------- description
@router.get("/v1/model", dependencies=protected, summary="names, configuration, preprocessing, weights hash")
async def model(request: Request) -> dict[str, Any]:
    state = request.app.state
    if not state.model_info:
        state.model_info.update(await asyncio.to_thread(model_info, state.predictor, state.settings))
    return state.model_info | {"ready": state.batcher.ready.is_set()}


@router.get("/v1/schema", dependencies=protected, summary="JSON Schema of the answer (and of egtr predict's files)")
async def schema() -> dict[str, Any]:
    return scene_graph_schema()


# HEAD as well as GET on what load balancers and uptime checks ask: the status, without a body
@router.get("/healthz", summary="liveness: the process answers")
@router.head("/healthz", include_in_schema=False)
async def healthz(request: Request) -> dict[str, Any]:
    batcher: MicroBatcher = request.app.state.batcher
    counts = {"queued": batcher.queued, "batches": batcher.batches, "images": batcher.images}
    return {"status": "ok", **counts, "abandoned": batcher.abandoned}


@router.get("/readyz", summary="readiness: the model is loaded and warmed up")
@router.head("/readyz", include_in_schema=False)
async def readyz(request: Request) -> JSONResponse:
    if request.app.state.batcher.ready.is_set():
        return JSONResponse({"status": "ready"})
    return error_response(503, "warming_up", "the model is warming up", {"Retry-After": "1"})


# ---------------------------------------------------------------------- the page
@router.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
async def index() -> FileResponse:
    return FileResponse(str(STATIC / "index.html"), media_type="text/html")


@router.get("/examples/{name}", include_in_schema=False)
async def example(name: str) -> FileResponse:
    if name not in EXAMPLES:
        raise ApiError(404, "not_found", f"no example {name!r}; there are {', '.join(EXAMPLES)}")
    return FileResponse(str(ASSETS / name), media_type="image/jpeg")


def server_timing(timings: dict[str, float], batch_size: int) -> str:
    """A `Server-Timing` header (milliseconds; browsers' developer tools show it): where a request's time went."""
    parts = [f"{name};dur={1000 * seconds:.2f}" for name, seconds in timings.items()]
    return ", ".join([*parts, f'batch;desc="{batch_size} image(s)"'])


async def result_unless_abandoned(request: Request, batcher: MicroBatcher, future: Future) -> Result:
    """The model's result for a queued image; if the client goes away first, the image is dropped from the queue
    (the model thread skips it: nobody would read the answer) and the request ends with 499."""
    result = asyncio.wrap_future(future)
    gone = asyncio.ensure_future(client_gone(request))
    try:
        await asyncio.wait((result, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if result.done():
        return result.result()
    batcher.abandon(future)  # too late if the model has it already: then its answer is simply not sent
    result.cancel()  # nobody waits for it any more
    raise ApiError(499, "client_closed_request", "the client closed the connection before the answer")


async def client_gone(request: Request) -> None:
    """Return once the client has closed the connection (the body is read already: `receive` only says that)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def check_query(request: Request, allowed: tuple[str, ...]) -> None:
    """A misspelt option (`topk=5`) is an error, not silently the default."""
    unknown = sorted(set(request.query_params) - set(allowed))
    if unknown:
        raise ApiError(422, "bad_option", f"{unknown[0]}: unknown option; expected some of {', '.join(allowed)}")


async def read_image_bytes(request: Request) -> bytes:
    """The image of a request: the file field `image` of a multipart form, otherwise the raw body."""
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        return await request.body()
    form = await request.form(max_files=1, max_fields=16)
    try:
        upload = form.get("image")
        if not isinstance(upload, UploadFile):
            raise ApiError(400, "missing_image", "a multipart upload needs a file field named 'image'")
        return await upload.read()
    finally:
        await form.close()


_DRAWING_LOCK = threading.Lock()


def render_drawing(graph: SceneGraph, prepared: PreparedImage, fmt: str, max_relations: int) -> bytes:
    """The `egtr predict` drawing, as PNG or SVG bytes."""
    # One drawing at a time: matplotlib's text layout and font caches are not meant for concurrent use.
    with _DRAWING_LOCK:
        figure = graph.draw(image=prepared.image, max_relations=max_relations)
        buffer = io.BytesIO()
        figure.savefig(buffer, format=fmt, dpi=100, facecolor="white")
    return buffer.getvalue()
