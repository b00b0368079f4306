"""The picture of docs/video.md: frames of an annotated MP4 side by side. Not a test.

python benchmarks/video_tracking.py --model demo_out/egtr/model --seeds 0 --keep /tmp/clips
python benchmarks/video_frames.py /tmp/clips/out0/clip0.annotated.mp4 --out docs/images/video_frames.png
"""

from __future__ import annotations

import argparse

import av
from PIL import Image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video")
    parser.add_argument("--times", type=float, nargs="+", default=[3.0, 6.0, 9.0], help="seconds")
    parser.add_argument("--out", required=True)
    arguments = parser.parse_args()
    wanted = sorted(arguments.times)
    frames: list[Image.Image] = []
    with av.open(arguments.video) as container:
        for frame in container.decode(video=0):
            if frame.time is not None and len(frames) < len(wanted) and frame.time >= wanted[len(frames)]:
                frames.append(frame.to_image())
    if len(frames) < len(wanted):
        raise SystemExit(f"{arguments.video}: ends before {wanted[len(frames)]} s")
    width, height = frames[0].size
    sheet = Image.new("RGB", (width * len(frames), height), "white")
    for index, picture in enumerate(frames):
        sheet.paste(picture, (index * width, 0))
    sheet.save(arguments.out)
    print(f"{len(frames)} frames of {width} x {height} -> {arguments.out}")


if __name__ == "__main__":
    main()
