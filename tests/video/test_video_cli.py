"""`egtr predict clip.mp4`: the files a user gets, bad input, and what survives an interrupted run."""

from __future__ import annotations

import json

import pytest

from egtr.cli import main
from egtr.video.decode import iter_frames

MODEL_OPTIONS = ["--size", "64", "--max-size", "64", "--top-k", "10", "--no-progress"]


@pytest.fixture(scope="module")
def model(reference_dir):
    return str(reference_dir / "artifact")


def test_predict_a_clip(clip, model, tmp_path, capsys):
    path, _ = clip
    code = main(
        [
            "predict",
            str(path),
            "--model",
            model,
            "--out",
            str(tmp_path),
            "--stride",
            "4",
            "--end",
            "4",
            "--batch-size",
            "3",
            *MODEL_OPTIONS,
        ]
    )
    assert code == 0
    assert "moving.mp4: 10 frames at 2.5 per second" in capsys.readouterr().out
    records = [json.loads(line) for line in (tmp_path / "moving.frames.jsonl").read_text().splitlines()]
    assert [r["frame_index"] for r in records] == list(range(0, 40, 4))
    assert [r["time"] for r in records] == pytest.approx([i * 0.4 for i in range(10)])
    for record in records:  # the `egtr predict` schema, plus time and tracks
        assert {"format_version", "image_size", "objects", "relations", "tracked_relations"} <= set(record)
        assert all("track_id" in item for item in record["objects"])
    tracked = [item for r in records for item in r["objects"] if item["track_id"] is not None]
    assert tracked and all("track_label_name" in item for item in tracked)
    events = json.loads((tmp_path / "moving.events.json").read_text())
    assert events["frames"] == 10 and events["smoothing"]["time_constant"] == 0.35 and "rule" in events["smoothing"]
    assert {"tracks", "relations", "changes"} <= set(events)
    frames = list(iter_frames(tmp_path / "moving.annotated.mp4"))
    assert len(frames) == 10 and frames[0].image.shape[1] > frames[0].image.shape[0]  # frame + graph panel
    assert not list(tmp_path.glob("*.partial*"))


@pytest.mark.parametrize("content", [b"", b"not a video at all" * 100])
def test_a_bad_video_is_one_line_and_exit_2(model, tmp_path, capsys, content):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(content)
    assert main(["predict", str(bad), "--model", model, "--out", str(tmp_path / "out"), *MODEL_OPTIONS]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith(f"error: {bad}:")  # before the model loads: nothing else
    assert not (tmp_path / "out" / "broken.frames.jsonl").exists()


def test_of_several_videos_the_readable_ones_are_processed(clip, model, tmp_path, capsys):
    bad = tmp_path / "empty.mp4"
    bad.write_bytes(b"")
    args = ["predict", str(bad), str(clip[0]), "--model", model, "--out", str(tmp_path), "--end", "0.5"]
    assert main([*args, *MODEL_OPTIONS]) == 1
    assert f"error: {bad}: empty file" in capsys.readouterr().err
    assert len((tmp_path / "moving.frames.jsonl").read_text().splitlines()) == 5


def test_a_truncated_mp4_keeps_the_frames_before_the_cut_warns_and_exits_1(model, tmp_path, capsys):
    """A faststart MP4 cut a third of the way in: the frames before the cut are predicted and written, one warning
    line names the file and the last frame, the events file says so too, and the exit code is 1."""
    from tests.video.conftest import write_truncated_faststart_mp4

    path = write_truncated_faststart_mp4(tmp_path / "cut.mp4", frames=60)
    out = tmp_path / "out"
    code = main(
        ["predict", str(path), "--model", model, "--out", str(out), "--stride", "3", "--no-draw", *MODEL_OPTIONS]
    )
    assert code == 1
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: {path}: the video breaks off after frame "), (
        warnings
    )
    records = [json.loads(line) for line in (out / "cut.frames.jsonl").read_text().splitlines()]
    last = int(warnings[0].split("after frame ")[1].split()[0])
    assert 2 < len(records) < 20 and [r["frame_index"] for r in records] == list(range(0, last + 1, 3))
    events = json.loads((out / "cut.events.json").read_text())
    assert events["frames"] == len(records) and events["ended_early"] == warnings[0].removeprefix("warning: ")


def test_videos_and_images_are_not_mixed(clip, model, tmp_path, capsys, reference_dir):
    code = main(["predict", str(clip[0]), "photo.jpg", "--model", model, "--out", str(tmp_path)])
    assert code == 2 and "either videos or images" in capsys.readouterr().err


def test_an_interrupted_run_keeps_what_was_written(clip, model, tmp_path, monkeypatch):
    from egtr.inference import Predictor

    calls = {"count": 0}
    forward = Predictor.forward

    def forward_then_stop(self, batch):
        calls["count"] += 1
        if calls["count"] == 3:
            raise KeyboardInterrupt
        return forward(self, batch)

    monkeypatch.setattr(Predictor, "forward", forward_then_stop)
    args = ["predict", str(clip[0]), "--model", model, "--out", str(tmp_path), "--batch-size", "2", *MODEL_OPTIONS]
    assert main(args) == 130  # interrupted
    lines = (tmp_path / "moving.frames.jsonl").read_text().splitlines()
    assert len(lines) == 4  # two batches of two
    assert json.loads((tmp_path / "moving.events.json").read_text())["frames"] == 4
    assert len(list(iter_frames(tmp_path / "moving.annotated.mp4"))) == 4


def test_without_the_video_extra_the_error_says_what_to_install(clip, model, tmp_path, capsys, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "trackers" else find_spec(name))
    assert main(["predict", str(clip[0]), "--model", model, "--out", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert error.strip() == 'error: egtr predict on videos needs the video extra: pip install "egtr[video]"'


def test_a_window_past_the_end_says_so(clip, model, tmp_path, capsys):
    code = main(["predict", str(clip[0]), "--model", model, "--out", str(tmp_path), "--start", "50", *MODEL_OPTIONS])
    assert code == 0 and "no frame in the sampled window" in capsys.readouterr().err
    assert (tmp_path / "moving.frames.jsonl").read_text() == ""
    assert json.loads((tmp_path / "moving.events.json").read_text())["frames"] == 0


def test_a_clip_through_onnx_runtime_gives_the_pytorch_frames(clip, model, exported_reference, tmp_path):
    path, _ = clip
    common = [str(path), "--stride", "8", "--end", "4", *MODEL_OPTIONS, "--size", "96", "--max-size", "96"]
    assert main(["predict", *common, "--model", model, "--out", str(tmp_path / "torch")]) == 0
    assert main(["predict", *common, "--model", str(exported_reference), "--out", str(tmp_path / "onnx")]) == 0

    def frames(folder):
        return [json.loads(line) for line in (folder / "moving.frames.jsonl").read_text().splitlines()]

    expected, got = frames(tmp_path / "torch"), frames(tmp_path / "onnx")
    assert len(got) == len(expected) == 5
    for want, have in zip(expected, got):
        assert [(r["subject"], r["predicate"], r["object"]) for r in have["relations"]] == [
            (r["subject"], r["predicate"], r["object"]) for r in want["relations"]
        ]
        assert [o["track_id"] for o in have["objects"]] == [o["track_id"] for o in want["objects"]]
        scores = ([r["score"] for r in have["relations"]], [r["score"] for r in want["relations"]])
        assert scores[0] == pytest.approx(scores[1], abs=1e-4)
