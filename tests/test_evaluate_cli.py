"""`python -m gan_core.evaluate`: a run folder -> metrics.json, the floor, and one-line errors (exit 2)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gan_core import evaluate
from gan_core.judging.protocol import Protocol
from gan_core.training import data, loop
from tests.conftest import tiny_config
from tests.metric_helpers import embedded_split, one_thread

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(autouse=True)
def _embedded_once(monkeypatch):
    split = embedded_split()
    monkeypatch.setattr(data, "load", lambda cfg: split)  # every config here reads the embedded default


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("feature-cache")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    loop.train(tiny_config(steps=2), out, split=embedded_split())
    return out


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = evaluate.main(argv)
    except SystemExit as e:  # argparse's errors exit from inside the parser
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_run_dir_writes_metrics_json(run_dir, cache_dir, capsys):
    code, out, _ = cli([str(run_dir), "--n", "100", "--device", "cpu", "--cache-dir", str(cache_dir)], capsys)
    assert code == 0
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["n_generated"] == 100 and "fid100" in saved and "fid100" in saved["floor"]
    assert Protocol.of(saved) == Protocol.of(saved["floor"]) and Protocol.of(saved).n_generated == 100
    assert "fid100" in out and "metrics.json" in out
    # the second judge too, in the file (run and floor) and on the screen, its name in the header
    assert "fid100_lenet" in saved and "fid100_lenet" in saved["floor"] and "fid100_lenet" in out
    assert f"{saved['extractor_lenet']} (*_lenet)" in out.splitlines()[0]
    # the memorization check, against the digits the run trained on (all 4,000 of the train split here)
    assert 0 <= saved["copy100"] <= 1 and 0 <= saved["copy100_pixels_p"] <= 1 and saved["n_train"] == 4000
    assert "copy100" not in saved["floor"] and "copy100" in out and "neighbours.png" in out
    from PIL import Image

    with Image.open(run_dir / "neighbours.png") as im:  # 8 rows of 6 tiles of 32 pixels, 2-pixel padding
        assert im.size == (6 * 34 + 2, 8 * 34 + 2)


def test_json_output_and_no_floor(run_dir, cache_dir, capsys):
    code, out, _ = cli([str(run_dir), "--n", "50", "--no-floor", "--json", "--cache-dir", str(cache_dir)], capsys)
    assert code == 0
    result = json.loads(out)
    assert "floor" not in result and result["n_generated"] == 50 and "kid50_mean" in result


def test_real_vs_real_prints_the_floor(cache_dir, capsys):
    code, out, _ = cli(["--real-vs-real", "--n", "100", "--cache-dir", str(cache_dir), "--json"], capsys)
    assert code == 0
    floor = json.loads(out)
    assert floor["n_generated"] == 100 and floor["modes100"] == 10


def test_a_real_process_exits_2_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "gan_core.evaluate", str(tmp_path / "missing")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "does not exist" in proc.stderr
