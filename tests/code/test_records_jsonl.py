"""JSON Lines reading: input files are read whole or refused with the line; only streams skip a torn tail."""

from __future__ import annotations

import pytest

from emotionthinker.errors import InputError
from emotionthinker.records import JsonlError, iter_jsonl, prepare_resume, read_jsonl

GOOD = '{"id": "a"}\n{"id": "b"}\n'


@pytest.mark.parametrize(
    "tail, line",
    [("garbage\n", 3), ("garbage", 3), ('{"id": "c"\n', 3), ("[1, 2]\n", 3), ('"text"', 3), ("garbage\n" + GOOD, 3)],
)
def test_an_input_file_with_a_bad_line_is_refused_with_its_line_number(tmp_path, tail, line):
    """A hand-edited or cut-off manifest must not lose its last record without a word (it used to)."""
    path = tmp_path / "m.jsonl"
    path.write_text(GOOD + tail)
    with pytest.raises(JsonlError, match=rf"m\.jsonl:{line}: ") as err:
        read_jsonl(path)
    assert isinstance(err.value, InputError) and isinstance(err.value, ValueError)


def test_a_stream_skips_only_a_last_line_cut_off_before_its_newline(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text(GOOD + '{"id": "c", "x": [1,')  # a writer killed, or still writing, mid-line
    assert [r["id"] for r in read_jsonl(path, torn_tail=True)] == ["a", "b"]
    path.write_text(GOOD + "garbage\n")  # a complete line is never a torn write
    with pytest.raises(JsonlError, match=":3: not valid JSON"):
        read_jsonl(path, torn_tail=True)
    path.write_text('{"id": "c", "x": [1,\n' + GOOD)
    with pytest.raises(JsonlError, match=":1: not valid JSON"):
        read_jsonl(path, torn_tail=True)


def test_prepare_resume_cuts_the_torn_tail_and_keeps_the_complete_records(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text(GOOD + '{"id": "c", "x"')
    assert prepare_resume(path) == {"a", "b"}
    assert path.read_text() == GOOD


def test_blank_lines_and_a_missing_file_hold_no_records(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('\n{"id": "a"}\n\n   \n')
    assert read_jsonl(path) == [{"id": "a"}]
    assert list(iter_jsonl(tmp_path / "missing.jsonl")) == []


def test_text_with_unicode_line_separators_round_trips(tmp_path):
    """json.dumps(ensure_ascii=False) leaves U+2028, U+2029 and U+0085 raw inside strings; splitlines() cut
    such a record in two, so a transcription or an LLM answer holding one made the file unreadable."""
    from emotionthinker.records import write_jsonl

    records = [{"id": "a", "text": "one\u2028two\u2029three\x85four\x0bfive\x1csix"}, {"id": "b", "text": "plain"}]
    path = tmp_path / "r.jsonl"
    write_jsonl(path, records)
    assert read_jsonl(path) == records
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))  # a file saved on Windows
    assert read_jsonl(path) == records
