import pytest

from llamalab.data import DataError, Field, read_jsonl, write_jsonl

FIELDS = [Field("id"), Field("label", choices=("yes", "no")), Field("n", int, required=False)]


def test_reads_valid_rows_and_skips_blank_lines(tmp_path):
    p = tmp_path / "ok.jsonl"
    p.write_text('{"id": "a", "label": "yes"}\n\n{"id": "b", "label": "no", "n": 3}\n')
    rows = read_jsonl(p, FIELDS, unique="id")
    assert [r["id"] for r in rows] == ["a", "b"] and rows[1]["n"] == 3


@pytest.mark.parametrize(
    "text, where, field",
    [
        ('{"id": "a", "label": "yes"}\n{"label": "no"}\n', ":2:", "id"),
        ('{"id": "a", "label": "maybe"}\n', ":1:", "label"),
        ('{"id": "a", "label": "yes", "n": "3"}\n', ":1:", "n"),
        ('{"id": "a", "label": "yes"}\n{"id": "a", "label": "no"}\n', ":2:", "id"),
        ('{"id": "a", "label": "yes"}\n{"id": "b", "label": \n', ":2:", None),
        ('["id", "a"]\n', ":1:", None),
    ],
)
def test_errors_name_file_line_and_field(tmp_path, text, where, field):
    p = tmp_path / "bad.jsonl"
    p.write_text(text)
    with pytest.raises(DataError) as err:
        read_jsonl(p, FIELDS, unique="id")
    msg = str(err.value)
    assert msg.startswith(f"{p}{where}")
    if field:
        assert f"field '{field}'" in msg


def test_empty_and_missing_files(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(DataError, match="empty"):
        read_jsonl(empty, FIELDS)
    with pytest.raises(DataError, match="not found"):
        read_jsonl(tmp_path / "nope.jsonl", FIELDS)


def test_write_jsonl_roundtrip_is_atomic(tmp_path):
    p = write_jsonl(tmp_path / "sub" / "x.jsonl", [{"id": "é", "label": "yes"}])
    assert read_jsonl(p, FIELDS)[0]["id"] == "é"
    assert not list(p.parent.glob("*.tmp"))
