"""The speed benchmark: statistics, timing loop, and a small CPU run through the API and the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch

from egtr.benchmark import (
    TimingStats,
    format_result,
    forward_gflop,
    matmul_floor_gflops,
    run_benchmark,
    time_function,
)
from egtr.config import EGTRConfig
from egtr.models.egtr import EGTR
from egtr.preprocessing import PreprocessorConfig

TINY = EGTRConfig(
    backbone="resnet18",
    d_model=64,
    encoder_layers=1,
    decoder_layers=2,
    num_queries=20,
    num_labels=5,
    num_rel_labels=3,
    encoder_ffn_dim=128,
    decoder_ffn_dim=128,
)


def test_timing_stats():
    stats = TimingStats.from_seconds([0.010, 0.020, 0.030, 0.040, 0.100], images_per_iteration=2)
    assert stats.runs == 5
    assert stats.median_ms == pytest.approx(30.0)
    assert stats.mean_ms == pytest.approx(40.0)
    assert stats.min_ms == pytest.approx(10.0) and stats.max_ms == pytest.approx(100.0)
    assert stats.iqr_ms == pytest.approx(20.0)  # p75 40 - p25 20
    assert stats.fps == pytest.approx(2 / 0.030)
    with pytest.raises(ValueError):
        TimingStats.from_seconds([])


def test_time_function_excludes_warmup():
    calls = []
    times, first_call = time_function(lambda: calls.append(1), torch.device("cpu"), warmup=3, runs=4)
    assert len(calls) == 7
    assert len(times) == 4 and all(t >= 0 for t in times)
    assert first_call >= 0


def test_run_benchmark_on_cpu_with_the_reference_model(reference_dir, reference_sizes):
    model = EGTR.from_pretrained(reference_dir / "artifact")
    result = run_benchmark(model, preprocessor=PreprocessorConfig(64, 96), device="cpu", warmup=1, runs=2)
    assert result["parameters"] == reference_sizes.num_parameters  # the original's count (shared heads once)
    assert result["settings"]["original_size_hw"] == [400, 600]
    assert result["settings"]["input_size_hw"] == [64, 96]
    for scope in ("model", "end_to_end"):
        values = result["scopes"][scope]
        assert values["runs"] == 2 and values["fps"] > 0
        assert values["p10_ms"] <= values["median_ms"] <= values["p90_ms"]
    assert result["process_peak_rss_bytes"] > 0
    json.dumps(result)  # serialisable as is
    text = format_result(result)
    assert f"{reference_sizes.num_parameters:,} parameters" in text and "end-to-end" in text and "96x64" in text


def test_run_benchmark_checks_arguments():
    model = EGTR(TINY).eval()
    with pytest.raises(ValueError, match="scopes"):
        run_benchmark(model, scopes=("everything",), device="cpu")
    with pytest.raises(ValueError, match="warmup"):
        run_benchmark(model, warmup=0, device="cpu")


def test_cli_benchmark_with_a_small_config(tmp_path, capsys):
    from egtr.cli import main

    config_path = tmp_path / "tiny.json"
    TINY.save(config_path)
    out = tmp_path / "bench.json"
    code = main(
        [
            "benchmark",
            "--model-config",
            str(config_path),
            "--device",
            "cpu",
            "--dtype",
            "bf16",
            "--size",
            "64",
            "--max-size",
            "96",
            "--warmup",
            "1",
            "--runs",
            "2",
            "--scope",
            "model",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    result = json.loads(out.read_text())
    assert result["settings"]["dtype"] == "bfloat16"
    assert list(result["scopes"]) == ["model"]
    assert result["parameters"] == sum(p.numel() for p in EGTR(TINY).parameters())
    assert "FPS" in capsys.readouterr().out


def test_cli_benchmark_reports_bad_inputs(tmp_path, capsys):
    from egtr.cli import main

    config_path = tmp_path / "tiny.json"
    TINY.save(config_path)
    missing = tmp_path / "missing.jpg"
    assert main(["benchmark", "--model-config", str(config_path), "--device", "cpu", "--image", str(missing)]) == 2
    assert "missing.jpg" in capsys.readouterr().err
    assert main(["benchmark", "--model-config", str(config_path), "--device", "cpu", "--dtype", "int8"]) == 2
    assert "int8" in capsys.readouterr().err


def test_benchmark_sizes_come_from_the_model_directory_unless_given(tmp_path, reference_dir):
    from egtr.benchmark import fps_preprocessing
    from egtr.models import read_checkpoint

    def sizes(recorded, size=None, max_size=None):
        preprocessor = fps_preprocessing(recorded, size, max_size)
        return preprocessor.shortest_edge, preprocessor.longest_edge

    assert sizes(None) == (600, 1000)  # the paper's FPS input
    assert sizes(read_checkpoint(reference_dir / "artifact").preprocessor) == (600, 1000)  # artifacts record none
    recorded = PreprocessorConfig(128, 256)
    assert sizes(recorded) == (128, 256)
    assert sizes(recorded, size=64) == (64, 256)
    assert sizes(recorded, 64, 96) == (64, 96)


def test_the_old_config_option_still_works_with_a_note(tmp_path, capsys):
    from egtr.cli import main

    config_path = tmp_path / "tiny.json"
    TINY.save(config_path)
    arguments = ["--device", "cpu", "--size", "64", "--max-size", "96", "--warmup", "1", "--runs", "1"]
    assert main(["benchmark", "--config", str(config_path), *arguments, "--scope", "model"]) == 0
    assert "--config is deprecated; use --model-config" in capsys.readouterr().err


def test_forward_gflop_counts_the_convolutions_and_matmuls():
    torch.manual_seed(0)
    model = EGTR(TINY).eval()
    small, large = (
        forward_gflop(model, torch.randn(1, 3, side, side), torch.ones(1, side, side, dtype=torch.long))
        for side in (64, 128)
    )
    # The backbone and the encoder scale with the pixels (x4); the decoder and relation head do not.
    assert 0 < small < large and 3.0 < large / small < 4.2, (small, large)
    resnet18_at_128 = 2 * 1.82 * (128 * 128) / (224 * 224)  # ResNet-18: 1.82 G multiply-adds at 224 px
    assert large > 0.5 * resnet18_at_128


def test_matmul_floor_is_a_rate_in_gflops():
    rate = matmul_floor_gflops(torch.float32, size=256, repeats=2)
    assert math.isfinite(rate) and rate > 0.1  # 2 * 256^3 FLOP over a measured time
