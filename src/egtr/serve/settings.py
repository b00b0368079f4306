"""What a server process is configured with (`ServeSettings`) and what it says about its model (`model_info`)."""

from __future__ import annotations

import ipaddress
import platform
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import torch

from egtr.fileio import JsonObject
from egtr.inference import Predictor, TorchRuntime
from egtr.models.checkpoint import state_dict_sha256
from egtr.serve.images import DEFAULT_MAX_PIXELS
from egtr.version import __version__

DEFAULT_MAX_UPLOAD_BYTES = 20 * 1024 * 1024


@dataclass(frozen=True)
class ServeSettings:
    """Settings of `create_app` (the `egtr serve` options, see docs/serving.md).

    Attributes:
        max_batch: most images in one forward pass; None: 8 on a GPU, 1 on a CPU (where a batch of 4 costs as much
            as 4 single passes, measured, so batching would only make each answer wait for the others).
        max_wait_ms: longest wait for more images to join a batch (only while more requests are being decoded).
        max_queue: most images waiting for the model; beyond it requests get 503 with Retry-After.
        max_upload_bytes: largest request body (413 beyond it).
        body_timeout_s: longest time for a request body to arrive in full (408 beyond it; stalled uploads).
        max_pixels: largest image (width x height) decoded (413 beyond it; decompression bombs).
        decode_workers: threads decoding uploads and drawing answers.
        api_key: when set, every /v1 request needs `Authorization: Bearer <api_key>`.
        cors_origins: origins allowed to call the API from a browser page of theirs (none by default); requests
            from pages of any other origin than the server's own are refused (403).
        host: the address the server listens on (`serve()` sets it); requests must name it in their Host header
            (for loopback addresses also localhost, 127.0.0.1 or [::1]; for 0.0.0.0 and :: any IP address).
        allowed_hosts: further Host names answered (a reverse proxy's, a DNS name); `*.example.org` for every
            name under example.org, `*` for any Host (the check is off).
        warmup: run one forward pass before /readyz reports ready.
        model_name: what /v1/model calls the model (e.g. the --model path).
    """

    max_batch: int | None = None
    max_wait_ms: float = 10.0
    max_queue: int = 32
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    body_timeout_s: float = 30.0
    max_pixels: int = DEFAULT_MAX_PIXELS
    decode_workers: int = 2
    api_key: str | None = None
    cors_origins: tuple[str, ...] = field(default_factory=tuple)
    host: str = "127.0.0.1"
    allowed_hosts: tuple[str, ...] = field(default_factory=tuple)
    warmup: bool = True
    model_name: str | None = None

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_queue", "max_upload_bytes", "max_pixels", "decode_workers"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")
        if not self.body_timeout_s > 0:
            raise ValueError(f"body_timeout_s must be > 0, got {self.body_timeout_s}")
        if self.api_key is not None and len(self.api_key) < 16:
            raise ValueError("the API key must be at least 16 characters long")
        for origin in self.cors_origins:
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.path or parts.query:
                raise ValueError(
                    f"--cors-origin {origin}: not an origin; expected scheme://host[:port] such as "
                    "https://app.example.org (no path, no trailing slash)"
                )
        if any(not name.strip() for name in self.allowed_hosts):
            raise ValueError("--allowed-hosts: an empty name; give names such as egtr.example.org")


def resolve_max_batch(max_batch: int | None, device: torch.device) -> int:
    """`max_batch`, or the default of the device: 8 on a GPU, 1 on a CPU."""
    if max_batch is not None:
        return max_batch
    return 1 if device.type == "cpu" else 8


def is_loopback(host: str) -> bool:
    """True for "localhost" and loopback addresses (127.0.0.0/8, ::1); a name other than localhost is not."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def model_info(predictor: Predictor, settings: ServeSettings) -> JsonObject:
    """The body of GET /v1/model: names, configuration summary, preprocessing, weights hash, versions, limits."""
    config = predictor.config
    source = predictor.source or {}
    return {
        "model": settings.model_name or source.get("model"),
        # the weights file's hash (what `sha256sum` prints) when the model came from a file, else the state dict's
        "weights_sha256": source.get("weights_sha256") or state_dict_sha256(predictor.model),
        "weights_sha256_of": "file" if source.get("weights_sha256") else "state_dict",
        "config": {
            "backbone": config.backbone,
            "d_model": config.d_model,
            "encoder_layers": config.encoder_layers,
            "decoder_layers": config.decoder_layers,
            "num_queries": config.num_queries,
            "num_labels": config.num_labels,
            "num_rel_labels": config.num_rel_labels,
            "use_freq_bias": config.use_freq_bias,
            "logit_adjustment": config.logit_adjustment,
            # an exported graph carries no module to count (None); its config and weights hash are the source's
            "parameters": _parameter_count(predictor),
        },
        "class_names": predictor.class_names,
        "predicate_names": predictor.predicate_names,
        "source": predictor.source,
        "preprocessing": {
            "shortest_edge": predictor.preprocessor.shortest_edge,
            "longest_edge": predictor.preprocessor.longest_edge,
            "image_mean": list(predictor.preprocessor.image_mean),
            "image_std": list(predictor.preprocessor.image_std),
            "resample": "bilinear",
        },
        "defaults": predictor.options.to_dict(),
        "runtime": {
            **predictor.runtime.describe(),
            "max_batch": resolve_max_batch(settings.max_batch, predictor.device),
            "max_wait_ms": settings.max_wait_ms,
            "max_queue": settings.max_queue,
            "max_upload_bytes": settings.max_upload_bytes,
            "body_timeout_s": settings.body_timeout_s,
            "max_pixels": settings.max_pixels,
        },
        "versions": {"egtr": __version__, "torch": torch.__version__, "python": platform.python_version()},
    }


def _parameter_count(predictor: Predictor) -> int | None:
    if not isinstance(predictor.runtime, TorchRuntime):
        return None
    return sum(parameter.numel() for parameter in predictor.model.parameters())
