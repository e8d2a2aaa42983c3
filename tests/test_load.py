"""reports.load: what the report reads (storages, run folders, benchmark JSON)."""

import json

from reports import load


def test_benchmark_json_with_missing_keys_is_read(tmp_path):
    p = tmp_path / "b.json"
    p.write_text(json.dumps({"benchmarks": [
        {"name": "a", "group": None, "stats": None},  # --benchmark-disable leaves no stats
        {"name": "b", "stats": {"min": 0.5}, "extra_info": {"g_images_per_s": 10.0, "config": {"x": 1}}},
    ]}))
    frame = load.load_benchmarks([p])
    assert list(frame["name"]) == ["a", "b"] and frame.loc[1, "stat_min"] == 0.5
    assert frame.loc[1, "g_images_per_s"] == 10.0 and "config" not in frame  # nested values stay out of the table
