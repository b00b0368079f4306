"""The streaming JSON reader of the importers: items one at a time, one-line errors, records quoted later."""

from __future__ import annotations

from pathlib import Path

import pytest

from egtr.data.importers.streaming import RecordRef, iter_field, iter_members, resolve, top_level_kind
from egtr.errors import DataError


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"images": [{"id": 1,', r"t.json: malformed JSON \(parse error: premature EOF\)$"),
        ('{"images": [{"id": 1,}]}', r"malformed JSON \(parse error: invalid object key .* near '\{\"images\""),
        (b'{"images": [\xff]}', r"malformed JSON \(lexical error: invalid char in json text\. near"),
    ],
)
def test_malformed_files_give_one_line_naming_the_file(tmp_path: Path, text: str | bytes, message: str):
    path = tmp_path / "t.json"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    with pytest.raises(DataError, match=message) as caught:
        list(iter_field(path, "images"))
    assert "\n" not in str(caught.value) and str(caught.value).startswith(str(path))


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
