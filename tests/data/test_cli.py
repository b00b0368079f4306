"""`egtr data synth|stats` end to end through the CLI entry point."""

from __future__ import annotations

import json
from pathlib import Path

from egtr.cli import main


def test_synth_then_validate_then_stats(tmp_path: Path, capsys) -> None:
    root = tmp_path / "world"
    assert (
        main(
            [
                "data",
                "synth",
                "--out",
                str(root),
                "--num-train",
                "12",
                "--num-val",
                "2",
                "--num-test",
                "2",
                "--image-size",
                "96",
                "--seed",
                "1",
            ]
        )
        == 0
    )
    assert len(json.loads((root / "train.json").read_text())["images"]) == 12
    assert main(["data", "validate", "--data-root", str(root), "--strict"]) == 0
    capsys.readouterr()
    plot = tmp_path / "histogram.png"
    assert main(["data", "stats", "--data-root", str(root), "--top", "3", "--plot", str(plot)]) == 0
    output = capsys.readouterr().out
    relations = sum(len(v) for v in json.loads((root / "rel.json").read_text())["train"].values())
    assert "split train: 12 images" in output and f"{relations} relations" in output
    assert "most frequent triplets (top 3):" in output and plot.stat().st_size > 1000


def test_stats_reports_bad_data_without_traceback(tmp_path: Path, capsys) -> None:
    (tmp_path / "train.json").write_text("{")
    (tmp_path / "rel.json").write_text("{}")
    assert main(["data", "stats", "--data-root", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "malformed JSON" in error and "Traceback" not in error and len(error.splitlines()) == 1
