"""`egtr info`: the model summary and one forward pass on a bundled photo."""

from pathlib import Path

import egtr
from egtr.cli import main

ASTRONAUT = Path(egtr.__file__).parent / "assets" / "astronaut.jpg"


def test_info_on_official_artifact_with_bundled_photo(reference_dir, reference_sizes, capsys):
    assert main(["info", "--model", str(reference_dir / "artifact"), "--image", str(ASTRONAUT)]) == 0
    printed = capsys.readouterr().out
    queries, predicates = reference_sizes.num_queries, reference_sizes.num_rel_labels
    assert f"parameters: {reference_sizes.num_parameters:,}" in printed
    assert f"pred_rel (1, {queries}, {queries}, {predicates})" in printed
    assert "input (800, 800)" in printed  # 512x512 photo, shorter side resized to 800


def test_info_default_model_has_vg_names(capsys):
    assert main(["info"]) == 0
    assert "150 classes, 50 predicates" in capsys.readouterr().out
    assert egtr.EGTRConfig().id2label[0] == "airplane"


def test_info_resizes_as_the_model_directory_records(reference_dir, tmp_path, capsys):
    from egtr.preprocessing import PreprocessorConfig

    egtr.EGTR.from_pretrained(reference_dir / "artifact").save_pretrained(
        tmp_path, preprocessor=PreprocessorConfig(96, 160)
    )
    assert main(["info", "--model", str(tmp_path), "--image", str(ASTRONAUT)]) == 0
    assert "input (96, 96)" in capsys.readouterr().out
