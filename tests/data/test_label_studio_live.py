"""The round trip against the real Label Studio: benchmarks/label_studio_roundtrip.py (predict -> project with the
generated config -> tasks with predictions imported -> predictions submitted as annotations -> JSON export ->
`egtr data import label-studio` -> the same boxes and relations).

Runs when EGTR_LABEL_STUDIO names the label-studio program (.ci/run installs Label Studio in a virtual environment
of its own, since its pinned dependencies would fight egtr's); skipped otherwise. Marked slow: Label Studio's first
start migrates its database, about 40-50 s of the 1-1.5 minutes on a 2-core machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROGRAM = os.environ.get("EGTR_LABEL_STUDIO")
SCRIPT = Path(__file__).parents[2] / "benchmarks" / "label_studio_roundtrip.py"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not PROGRAM, reason="EGTR_LABEL_STUDIO does not name a label-studio program (see .ci/run)"),
]


def test_predictions_accepted_in_label_studio_come_back_the_same(tmp_path):
    summary = tmp_path / "summary.json"
    command = [sys.executable, str(SCRIPT), "--label-studio", str(PROGRAM), "--keep", str(tmp_path / "work")]
    completed = subprocess.run(
        [*command, "--summary", str(summary)], capture_output=True, text=True, timeout=900, check=False
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    result = json.loads(summary.read_text())
    assert result["accepted"] == result["exported"] == 4 and len(result["images"]) == 4
    assert result["largest_box_difference_px"] <= 1 and result["differences"] == []
