"""The streaming JSON reader of the importers: items one at a time, one-line errors, records quoted later."""

from __future__ import annotations

from pathlib import Path

import pytest

from egtr.data.importers.streaming import RecordRef, iter_field, iter_members, resolve, top_level_kind
from egtr.errors import DataError


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"images": [{"id": 1,', r"t.json: malformed JSON at line 1 column 22: Expecting property name"),
        ('{"images": [{"id": 1,}]}', r"malformed JSON at line 1 column 22: Expecting property name"),
        ('{"images": [\n  {"id": 1}\n  {"id": 2}]}', r"malformed JSON at line 3 column 3: expecting ',' or ']'"),
        ('{"images": []} []', r"line 1 column 16: extra data"),
        (b'{"images": [\xff]}', r"t.json: not UTF-8 text"),
    ],
)
def test_malformed_files_give_one_line_naming_the_file(tmp_path: Path, text: str | bytes, message: str):
    path = tmp_path / "t.json"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    with pytest.raises(DataError, match=message) as caught:
        list(iter_field(path, "images"))
    assert "\n" not in str(caught.value) and str(caught.value).startswith(str(path))


def test_records_cut_by_chunk_ends_are_read_whole(tmp_path: Path, monkeypatch):
    """Chunks of 7 characters cut every record, key and number: the result is json.load's."""
    import json

    import egtr.data.importers.streaming as streaming

    document = {"categories": [{"id": 1, "name": "man"}], "images": [{"id": 123456, "w": 0.125} for _ in range(5)]}
    document["annotations"] = [{"id": 10 + i, "bbox": [1.5, 22222, 3e-5, -4]} for i in range(9)]
    path = tmp_path / "a.json"
    path.write_text(json.dumps(document, indent=1))
    monkeypatch.setattr(streaming, "CHUNK", 7)
    assert list(iter_field(path, "annotations")) == document["annotations"]
    assert list(iter_field(path, "images")) == document["images"]
    path.write_text(json.dumps(document, indent=1).replace('"bbox"', "bbox", 1))
    line = 1 + json.dumps(document, indent=1)[: json.dumps(document, indent=1).index('"bbox"')].count("\n")
    with pytest.raises(DataError, match=rf"line {line} column \d+: Expecting property name"):
        list(iter_field(path, "annotations"))


def test_items_and_members_stream_and_numbers_are_plain(tmp_path: Path):
    path = tmp_path / "a.json"
    path.write_text('{"images": [{"id": 1, "w": 2.5}, {"id": 2}], "other": {"images": [9]}}')
    assert list(iter_field(path, "images")) == [{"id": 1, "w": 2.5}, {"id": 2}]
    assert type(next(iter_field(path, "images"))["w"]) is float  # not Decimal
    assert list(iter_field(path, "missing")) == []
    assert [key for key, _ in iter_members(path)] == ["images", "other"]
    assert top_level_kind(path) == "object"
    (tmp_path / "b.json").write_text("\n  [1, 2]")
    assert top_level_kind(tmp_path / "b.json") == "list"


def test_resolve_reads_the_records_pointed_at(tmp_path: Path):
    first, second = tmp_path / "1.json", tmp_path / "2.json"
    first.write_text('{"annotations": [{"id": 10}, {"id": 11}, {"id": 12}], "images": [{"id": 1}]}')
    second.write_text('{"annotations": [{"id": 20}]}')
    refs = [RecordRef(first, "annotations", 2), RecordRef(second, "annotations", 0), RecordRef(first, "images", 0)]
    assert resolve(refs) == {refs[0]: {"id": 12}, refs[1]: {"id": 20}, refs[2]: {"id": 1}}
