"""gan_core.files: the readers and writers every run folder uses."""

from gan_core import files


def test_a_torn_jsonl_line_is_skipped(tmp_path):
    p = tmp_path / "evals.jsonl"
    p.write_text('{"g_step": 1}\n{"g_step": 2}\n{"g_st')
    assert files.read_jsonl(p) == [{"g_step": 1}, {"g_step": 2}]
    assert files.read_jsonl(tmp_path / "missing.jsonl") == []
