"""Bulk prediction in one process: records equal `Predictor`'s, shards, errors, manifest, inputs, resumption."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from tests.bulk.conftest import MODEL, SIZES, environment, make_predictor, read_records

from egtr.bulk import BulkInputError, BulkOptions, Corpus, predict_corpus
from egtr.cli import main
from egtr.images import load_image


def run(corpus: Corpus, out: Path, predictor=None, **options) -> None:
    options = {"num_workers": 0, "progress": False, **options}
    predict_corpus(predictor or make_predictor(), corpus, BulkOptions(out=out, **options))


def test_records_are_the_predictor_json_plus_the_key(single_process_run, corpus_files, predictor):
    records = read_records(single_process_run)
    readable = [path for path in corpus_files if path.name != "broken.png"]
    assert [record["key"] for record in records] == [str(path) for path in readable]  # input order, once each
    for record, path in zip(records, readable):
        expected = predictor(path).to_dict()
        assert {name: value for name, value in record.items() if name != "key"} == expected

    shards = sorted(path.name for path in (single_process_run / "shards").iterdir())
    assert shards == [f"list-{chunk:06d}.parquet" for chunk in range(6)]  # 21 entries in units of 4
    errors = [json.loads(line) for line in (single_process_run / "errors.jsonl").open()]
    assert [(error["unit"], error["key"]) for error in errors] == [("list-000001", str(corpus_files[7]))]
    assert "not a readable image" in errors[0]["reason"] and str(corpus_files[7]) in errors[0]["reason"]

    manifest = json.loads((single_process_run / "manifest.json").read_text())
    assert manifest["counts"] == {"records": 20, "errors": 1, "shards": 6}
    assert sum(shard["records"] for shard in manifest["shards"]) == 20
    assert len(manifest["weights_sha256"]) == 64 and manifest["settings"]["prediction"]["top_k"] == 10
    assert manifest["complete"] is True and manifest["world_size"] == 1


def test_error_reasons_name_the_file_and_the_cause_in_plain_words(corpus_files, predictor, tmp_path):
    """errors.jsonl: each reason names the file (or tar sample) and says what is wrong, never a Python repr such as
    `<_io.BufferedReader name='...'>` or `<_io.BytesIO object at 0x...>`."""
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(corpus_files[0].read_bytes()[:80])
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_bytes(b"this is not a PNG")
    shard = tmp_path / "shard.tar"
    with tarfile.open(shard, "w") as archive:
        archive.add(not_an_image, arcname="sample0.png")
    out = tmp_path / "out"
    run(Corpus(files=(str(truncated), str(not_an_image)), tar_shards=(str(shard),)), out, predictor)
    reasons = {error["key"]: error["reason"] for error in map(json.loads, (out / "errors.jsonl").open())}
    assert set(reasons) == {str(truncated), str(not_an_image), "sample0"}
    assert reasons[str(truncated)].startswith(f"{truncated}: corrupt or truncated image (")
    assert (
        reasons[str(not_an_image)]
        == f"{not_an_image}: not a readable image file (its content is in no image format Pillow reads)"
    )
    assert reasons["sample0"].startswith("sample0: not a readable image file")
    assert not any("<_io" in reason or " object at 0x" in reason for reason in reasons.values()), reasons


def test_jsonl_gz_batched_by_size_holds_the_same_records(single_process_run, corpus_files, tmp_path):
    """Exact batching (batch 4, images of one resized size only) changes nothing but float rounding."""
    out = tmp_path / "out"
    run(
        Corpus(files=tuple(map(str, corpus_files)), shard_size=4),
        out,
        make_predictor(batch_size=4),
        output_format="jsonl.gz",
    )
    expected = read_records(single_process_run)
    records = read_records(out)
    assert [record["key"] for record in records] == [record["key"] for record in expected]
    for record, reference in zip(records, expected):
        assert [o["label"] for o in record["objects"]] == [o["label"] for o in reference["objects"]]
        assert [(r["subject"], r["object"], r["predicate"]) for r in record["relations"]] == [
            (r["subject"], r["object"], r["predicate"]) for r in reference["relations"]
        ]
        for relation, reference_relation in zip(record["relations"], reference["relations"]):
            assert relation["score"] == pytest.approx(reference_relation["score"], rel=1e-4, abs=1e-7)


def test_tar_shards_and_input_lists(corpus_files, predictor, tmp_path):
    """WebDataset shards (key + image bytes) and text / CSV / Parquet lists with relative paths and --data-root."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    shard = tmp_path / "shard-000.tar"
    with tarfile.open(shard, "w") as archive:
        for number, path in enumerate(corpus_files[:3]):
            archive.add(path, arcname=f"sample{number:04d}.png")
            (tmp_path / f"sample{number:04d}.json").write_text("{}")
            archive.add(tmp_path / f"sample{number:04d}.json", arcname=f"sample{number:04d}.json")
        archive.add(tmp_path / "sample0000.json", arcname="textonly.json")  # a sample without an image
    root = corpus_files[0].parent
    (tmp_path / "list.txt").write_text(f"{corpus_files[3].name}\n\n{corpus_files[4].name}\n")
    (tmp_path / "list.csv").write_text(f"id,path\n1,{corpus_files[5].name}\n2,\n")
    pq.write_table(pa.table({"path": [corpus_files[6].name]}), tmp_path / "list.parquet")
    corpus = Corpus(
        input_lists=tuple(str(tmp_path / name) for name in ("list.txt", "list.csv", "list.parquet")),
        tar_shards=(str(shard),),
        data_root=str(root),
        shard_size=2,
    )
    out = tmp_path / "out"
    run(corpus, out, predictor, output_format="jsonl", num_workers=1)

    records = {record["key"]: record for record in read_records(out)}
    for name in (path.name for path in corpus_files[3:7]):
        assert records.pop(name) == {"key": name, **predictor(root / name).to_dict()}
    for number, path in enumerate(corpus_files[:3]):
        expected = predictor(load_image(path)).to_dict()  # bytes decoded like a file; no path
        assert records.pop(f"sample{number:04d}") == {"key": f"sample{number:04d}", **expected}
    assert records == {}
    errors = {error["key"]: error["reason"] for error in map(json.loads, (out / "errors.jsonl").open())}
    assert set(errors) == {f"{tmp_path / 'list.csv'}:3", "textonly"}
    assert "empty path" in errors[f"{tmp_path / 'list.csv'}:3"] and "has no image" in errors["textonly"]
    assert sorted(path.name for path in (out / "shards").iterdir()) == [
        "list-000000.jsonl", "list-000001.jsonl", "list-000002.jsonl", "tar-00000-0000.jsonl", "tar-00000-0001.jsonl"
    ]  # fmt: skip
    assert (out / "_units" / "tar-00000-complete.json").is_file()


def test_resume_redoes_only_the_missing_shards(single_process_run, corpus_files, predictor, tmp_path):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(single_process_run, out)
    shards = sorted((out / "shards").iterdir())
    kept = {path: path.stat().st_mtime_ns for path in shards[::2]}
    for path in shards[1::2]:
        path.unlink()
    (out / "shards" / ".list-000001.parquet.abc.tmp").write_bytes(b"half a shard from a killed run")
    run(Corpus(files=tuple(map(str, corpus_files)), shard_size=4), out, predictor, num_workers=1)
    assert {path: path.stat().st_mtime_ns for path in kept} == kept  # untouched
    assert read_records(out) == read_records(single_process_run)
    assert json.loads((out / "manifest.json").read_text())["counts"]["records"] == 20


def test_other_settings_are_refused_unless_overwrite(single_process_run, corpus_files, tmp_path, capsys):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(single_process_run, out)
    corpus = Corpus(files=tuple(map(str, corpus_files)), shard_size=4)
    with pytest.raises(BulkInputError, match="top_k 10 -> 5"):
        run(corpus, out, make_predictor().__class__.from_pretrained(MODEL, device="cpu", top_k=5, **SIZES))
    with pytest.raises(BulkInputError, match="shard_size"):
        run(Corpus(files=corpus.files, shard_size=5), out)
    arguments = ["predict", *map(str, corpus_files), "--model", str(MODEL), "--out", str(out), "--size", "64"]
    arguments += ["--max-size", "96", "--top-k", "5", "--shard-size", "4", "--output-format", "parquet"]
    assert main(arguments) == 2
    assert "other settings" in capsys.readouterr().err
    assert main([*arguments, "--overwrite", "--no-progress", "--decode-workers", "0"]) == 1  # the broken file
    assert all(len(record["relations"]) <= 5 for record in read_records(out))
    assert json.loads((out / "settings.json").read_text())["prediction"]["top_k"] == 5


def test_bad_inputs_are_one_line_errors(tmp_path, capsys):
    (tmp_path / "list.csv").write_text("id,file\n1,a.jpg\n")
    common = ["--model", str(MODEL), "--out", str(tmp_path / "out"), "--output-format", "parquet"]
    assert main(["predict", "--input-list", str(tmp_path / "list.csv"), *common]) == 2
    assert "no 'path' column (columns: id, file)" in capsys.readouterr().err
    assert main(["predict", "--input-list", str(tmp_path / "missing.txt"), *common]) == 2
    assert "missing.txt: no such file" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "shards-{000..001}.tar"), *common]) == 2
    assert "shards-000.tar: no such file" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "a.tar"), "--model", str(MODEL), "--out", str(tmp_path)]) == 2
    assert "need --output-format" in capsys.readouterr().err


def test_input_mistakes_are_reported_before_lightning_is_imported(tmp_path):
    """A missing list and a Parquet list without the path column: one line naming the file (and the column), exit 2,
    before Lightning is imported (20-90 s) or the model loaded (it does not exist here)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    missing, listing = tmp_path / "missing.txt", tmp_path / "list.parquet"
    pq.write_table(pa.table({"file": ["a.jpg"]}), listing)
    script = (
        "import sys\n"
        "from egtr.cli import main\n"
        "common = ['--model', sys.argv[1], '--out', sys.argv[2], '--output-format', 'parquet']\n"
        "codes = [main(['predict', '--input-list', name, *common]) for name in sys.argv[3:]]\n"
        "print(codes, sorted({name.split('.')[0] for name in sys.modules} & {'lightning', 'pytorch_lightning'}))\n"
    )
    arguments = [str(tmp_path / "no-model"), str(tmp_path / "out"), str(missing), str(listing)]
    completed = subprocess.run(
        [sys.executable, "-c", script, *arguments], env=environment(), capture_output=True, text=True, timeout=300
    )
    assert completed.stdout.strip() == "[2, 2] []", completed.stderr[-3000:]
    assert completed.stderr.splitlines() == [
        f"error: {missing}: no such file",
        f"error: {listing}: no 'path' column (columns: file); see --path-column",
    ]


def test_rerunning_a_complete_run_changes_nothing_and_loads_no_model(corpus_files, predictor, tmp_path, capsys):
    """The same command again on a finished run: one line saying it is complete, the run's exit code, no model
    loaded, every file (manifest included) byte for byte and time for time as it was; the Python API, given a
    loaded model, does nothing either."""
    from unittest import mock

    from egtr.inference import Predictor

    out = tmp_path / "out"
    arguments = ["predict", *map(str, corpus_files), "--model", str(MODEL), "--out", str(out), "--size", "64"]
    arguments += ["--max-size", "96", "--top-k", "10", "--shard-size", "4", "--output-format", "parquet"]
    arguments += ["--no-progress", "--decode-workers", "0"]
    assert main(arguments) == 1  # the broken file
    capsys.readouterr()

    def snapshot() -> dict[Path, tuple[bytes, int]]:
        return {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in out.rglob("*") if path.is_file()}

    before = snapshot()
    with mock.patch.object(Predictor, "from_pretrained", side_effect=AssertionError("the model was loaded")):
        assert main(arguments) == 1
    assert capsys.readouterr().out.startswith(f"{out}: complete, nothing to do (20 records in 6 shards, 1 unreadable")
    assert snapshot() == before

    summary = predict_corpus(
        predictor, Corpus(files=tuple(map(str, corpus_files)), shard_size=4), BulkOptions(out=out, num_workers=0)
    )
    assert summary.already_complete and summary.manifest is not None and summary.manifest["counts"]["records"] == 20
    assert snapshot() == before


def test_threads_default_to_the_cores_per_process_and_are_recorded(corpus_files, tmp_path, monkeypatch):
    """`--threads N` sets torch's threads of each process; by default the cores this process may use (its affinity
    mask) shared out between the machine's processes, or OMP_NUM_THREADS when set; the manifest records it and a
    resume with other threads is allowed (the records do not depend on it)."""
    import os

    from egtr.runtime import threads_per_process

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 2, 3, 5, 7}, raising=False)
    assert [threads_per_process(processes) for processes in (1, 2, 8)] == [5, 2, 1]
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads_per_process(2) == 3
    monkeypatch.delenv("OMP_NUM_THREADS")

    out = tmp_path / "out"
    arguments = ["predict", str(corpus_files[0]), "--model", str(MODEL), "--out", str(out), "--size", "64"]
    arguments += ["--max-size", "96", "--output-format", "jsonl", "--no-progress", "--decode-workers", "0"]
    assert main([*arguments, "--threads", "1"]) == 0
    assert json.loads((out / "manifest.json").read_text())["threads"] == 1
    assert "threads" not in json.dumps(json.loads((out / "settings.json").read_text()))
    (out / "shards" / "list-000000.jsonl").unlink()  # a resume of the same run, with the default threads
    assert main(arguments) == 0
    assert json.loads((out / "manifest.json").read_text())["threads"] == 5


def test_duckdb_finds_the_images_with_a_triplet(single_process_run):
    """The query of docs/bulk.md: every image with <subject, predicate, object> above a score, straight from the
    Parquet shards; and the shards load as they are with pandas and pyarrow."""
    duckdb = pytest.importorskip("duckdb")
    import pandas as pd
    import pyarrow.dataset as ds

    records = read_records(single_process_run)
    first = records[0]["relations"][0]
    subject = records[0]["objects"][first["subject"]]["label_name"]
    obj = records[0]["objects"][first["object"]]["label_name"]
    predicate, threshold = first["predicate_name"], first["score"] * 0.5
    expected = sorted(
        {
            record["key"]
            for record in records
            for relation in record["relations"]
            if relation["predicate_name"] == predicate
            and record["objects"][relation["subject"]]["label_name"] == subject
            and record["objects"][relation["object"]]["label_name"] == obj
            and relation["score"] > threshold
        }
    )
    query = """
        SELECT DISTINCT key FROM (
            SELECT key, objects, unnest(relations) AS r FROM read_parquet($shards)
        )
        WHERE r.predicate_name = $predicate AND r.score > $threshold
          AND objects[r.subject + 1].label_name = $subject AND objects[r.object + 1].label_name = $object
        ORDER BY key
    """
    parameters = {
        "shards": str(single_process_run / "shards" / "*.parquet"),
        "predicate": predicate,
        "threshold": threshold,
        "subject": subject,
        "object": obj,
    }
    found = [row[0] for row in duckdb.sql(query, params=parameters).fetchall()]
    assert found == expected and records[0]["key"] in found

    frame = pd.read_parquet(single_process_run / "shards")
    assert sorted(frame["key"]) == sorted(record["key"] for record in records)
    assert ds.dataset(single_process_run / "shards").count_rows() == 20


def test_the_triplets_view_has_one_row_per_relation(single_process_run, tmp_path):
    """`egtr.bulk.triplets_view`: one row per relation with the names, scores and boxes of its subject and object,
    from Parquet and from JSONL shards alike; the one-line query of docs/bulk.md returns rows for a small model."""
    import gzip

    duckdb = pytest.importorskip("duckdb")
    from egtr.bulk import triplets_view

    records = read_records(single_process_run)
    expected = sorted(
        (
            record["key"],
            record["objects"][relation["subject"]]["label_name"],
            relation["predicate_name"],
            record["objects"][relation["object"]]["label_name"],
            relation["score"],
            record["objects"][relation["subject"]]["box"],
            record["objects"][relation["object"]]["box"],
        )
        for record in records
        for relation in record["relations"]
    )
    assert expected  # the reference model gives relations
    jsonl = tmp_path / "jsonl"
    (jsonl / "shards").mkdir(parents=True)
    with gzip.open(jsonl / "shards" / "list-000000.jsonl.gz", "wt") as stream:
        stream.writelines(json.dumps(record) + "\n" for record in records)
    columns = "key, subject, predicate, object, score, subject_box, object_box"
    for folder in (single_process_run, jsonl):
        con = duckdb.connect()
        triplets_view(con, folder)
        assert sorted(con.sql(f"SELECT {columns} FROM triplets").fetchall()) == expected
        subject, predicate, obj = expected[0][1:4]
        query = "SELECT key, score FROM triplets WHERE subject = ? AND predicate = ? AND object = ? ORDER BY score DESC"
        found = con.execute(query, [subject, predicate, obj]).fetchall()  # the docs' query, without a threshold
        assert found and found[0][1] == max(row[4] for row in expected if row[1:4] == (subject, predicate, obj))
    with pytest.raises(BulkInputError, match="no shards"):
        triplets_view(duckdb.connect(), tmp_path / "empty")


def test_input_list_in_the_default_files_mode(corpus_files, predictor, tmp_path, capsys):
    listing = tmp_path / "list.txt"
    listing.write_text(f"{corpus_files[0]}\n{corpus_files[1]}\n")
    out = tmp_path / "out"
    arguments = ["predict", "--input-list", str(listing), "--model", str(MODEL), "--out", str(out), "--no-draw"]
    assert main([*arguments, "--size", "64", "--max-size", "96", "--top-k", "10", "--no-progress"]) == 0
    written = json.loads((out / f"{corpus_files[1].stem}.json").read_text())
    assert written == predictor(corpus_files[1]).to_dict()
    assert sorted(path.name for path in out.iterdir()) == sorted(f"{path.stem}.json" for path in corpus_files[:2])


def test_input_root_is_the_base_of_relative_list_paths_and_data_root_its_old_spelling(capsys):
    from egtr.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["predict", "--model", "M", "--out", "O", "--input-list", "L", "--input-root", "D"])
    assert args.input_root == "D" and "note:" not in capsys.readouterr().err
    args = parser.parse_args(["predict", "--model", "M", "--out", "O", "--input-list", "L", "--data-root", "D"])
    assert args.input_root == "D"
    assert "--data-root is deprecated; use --input-root" in capsys.readouterr().err
