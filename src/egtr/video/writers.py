"""Output files written while a video is processed: an MP4 encoder (PyAV) and a JSON-lines file.

Both write to a `.partial` file next to the target and move it into place on `close()` (also when processing stops
early: what was written up to then is kept, complete and playable); memory does not grow with the video's length.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path
from typing import IO, Any

import numpy as np


def _partial_path(path: Path) -> Path:
    # The suffix stays last so that tools (and FFmpeg's muxer guess) still see the file type.
    return path.with_name(f"{path.stem}.partial{path.suffix}")


class JsonLinesWriter:
    """One JSON object per line, flushed after every record."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._partial = _partial_path(self.path)
        self._file: IO[str] | None = self._partial.open("w")
        self.records = 0

    def write(self, record: Mapping[str, object]) -> None:
        if self._file is None:
            raise ValueError(f"{self.path}: already closed")
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        self.records += 1

    def close(self) -> Path:
        if self._file is not None:
            self._file.close()
            self._file = None
            os.replace(self._partial, self.path)
        return self.path

    def __enter__(self) -> JsonLinesWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _pick_codec() -> str:
    import av

    # H.264 plays everywhere; PyAV's wheels bundle libx264. MPEG-4 part 2 is the fallback of minimal FFmpeg builds.
    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


class MP4Writer:
    """Encode RGB frames into an MP4 file (H.264, yuv420p) as they come (another suffix, e.g. .mkv or .ts, picks
    that container instead).

    The frame size is fixed by the first frame; odd sizes are padded by one pixel (yuv420p needs even sizes).
    `rate` is the frame rate written into the file (frames per second, e.g. the sampling rate of the video).
    """

    def __init__(self, path: str | Path, rate: float | Fraction, quality: int = 20) -> None:
        self.path = Path(path)
        self.rate = Fraction(rate).limit_denominator(1001) if rate else Fraction(25)
        self.quality = quality
        self._partial = _partial_path(self.path)
        self._container: Any = None
        self._stream: Any = None
        self.frames = 0

    def _start(self, height: int, width: int) -> None:
        import av

        self._container = av.open(str(self._partial), mode="w")  # container from the suffix
        codec = _pick_codec()
        stream = self._container.add_stream(codec, rate=self.rate)
        stream.width, stream.height = width + width % 2, height + height % 2
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": str(self.quality), "preset": "veryfast"}
        else:
            stream.bit_rate = 4_000_000
        self._stream = stream

    def write(self, image: np.ndarray) -> None:
        """Append one (H, W, 3) uint8 RGB frame."""
        import av

        if self._container is None:
            self._start(image.shape[0], image.shape[1])
        stream = self._stream
        if image.shape[0] != stream.height or image.shape[1] != stream.width:
            padded = np.zeros((stream.height, stream.width, 3), dtype=np.uint8)
            padded[: image.shape[0], : image.shape[1]] = image[: stream.height, : stream.width]
            image = padded
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image, dtype=np.uint8), format="rgb24")
        for packet in stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> Path | None:
        """Flush the encoder and move the file into place; None if no frame was ever written."""
        if self._container is None:
            return None
        try:
            for packet in self._stream.encode():
                self._container.mux(packet)
        finally:
            self._container.close()
            self._container = None
        os.replace(self._partial, self.path)
        return self.path

    def __enter__(self) -> MP4Writer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
