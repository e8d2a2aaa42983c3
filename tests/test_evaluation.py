"""gan_core.judging.evaluation: the reference, the floor, judging generators and run folders."""

from __future__ import annotations

import json

import pytest
import torch

from gan_core.errors import UserError
from gan_core.judging import evaluation, extractor, metrics

pytestmark = pytest.mark.usefixtures("single_thread")


# --- the floor ----------------------------------------------------------------------------------------


def test_floor_draw_is_class_balanced_deterministic_and_from_train(embedded):
    a = evaluation.balanced_draw(embedded.train, embedded.train_labels, 1005)
    b = evaluation.balanced_draw(embedded.train, embedded.train_labels, 1005)
    assert torch.equal(a, b)
    labels = evaluation.balanced_draw(embedded.train_labels.view(-1, 1), embedded.train_labels, 1005).view(-1)
    counts = torch.bincount(labels, minlength=10)
    assert counts.min() == 100 and counts.max() == 101 and counts.sum() == 1005
    train_rows = {bytes(x.numpy()) for x in embedded.train}
    assert all(bytes(x.numpy()) in train_rows for x in a[:50])
    with pytest.raises(UserError, match="smaller --n"):
        evaluation.balanced_draw(embedded.train, embedded.train_labels, 10_000)


def test_floor_uses_the_same_counts(ref, floor1k):
    assert floor1k["n_generated"] == 1000 and floor1k["n_real"] == 1000 and "fid1k" in floor1k
    assert floor1k["floor_seed"] == evaluation.FLOOR_SEED


# --- generators and the training callback -------------------------------------------------------------


def test_evaluator_as_on_eval_callback_leaves_the_generator_as_it_was(embedded, cache_dir):
    from gan_core.training.accounting import build_models
    from gan_core.training.loop import EvalPoint
    from tests.conftest import tiny_config

    cfg = tiny_config()
    g, _ = build_models(cfg)
    g.train()
    state = {k: v.clone() for k, v in g.state_dict().items()}
    evaluator = evaluation.Evaluator(n=200, split=embedded, cache_dir=cache_dir)
    point = EvalPoint(g_step=5, d_step=5, wall_s=0.0, generator=g, cfg=cfg, device=torch.device("cpu"), out_dir=None)
    first = evaluator(point)
    assert g.training  # mode restored, and no BatchNorm statistics updated
    assert all(torch.equal(v, g.state_dict()[k]) for k, v in state.items())
    assert first["n_generated"] == 200 and first["extractor"] == extractor.extractor_name()
    assert evaluator(point)["fid200"] == first["fid200"]  # the same fixed noise every time
    # an anytime point is the first judge's only (the second re-judges final evaluations: its cost, per point)
    assert not [k for k in first if k.endswith(evaluation.SECOND_JUDGE_SUFFIX)]
    json.dumps(first)


def test_train_logs_evaluator_metrics(embedded, cache_dir, tmp_path):
    from gan_core.training import loop
    from tests.conftest import tiny_config

    cfg = tiny_config(steps=4, eval_every=2, log_every=2)
    result = loop.train(cfg, tmp_path / "run", split=embedded,
                         on_eval=evaluation.Evaluator(n=100, split=embedded, cache_dir=cache_dir))
    rows = [json.loads(line) for line in (tmp_path / "run" / "evals.jsonl").read_text().splitlines()]
    assert [r["g_step"] for r in rows] == [0, 2, 4] and all("fid100" in r for r in rows)
    assert result.evals[-1]["fid100"] == rows[-1]["fid100"]


def test_evaluate_run_writes_metrics_json(embedded, cache_dir, tmp_path, monkeypatch):
    from gan_core.training import data, loop
    from tests.conftest import tiny_config

    run = tmp_path / "run"
    loop.train(tiny_config(steps=2), run, split=embedded)
    monkeypatch.setattr(data, "load", lambda cfg: embedded)  # the run's data config is the embedded default
    result = evaluation.evaluate_run(run, n=200, device="cpu", cache_dir=cache_dir)
    saved = json.loads((run / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(result))
    assert saved["fid200"] > saved["floor"]["fid200"] and saved["floor"]["n_generated"] == 200
    assert saved["extractor"] == saved["floor"]["extractor"] == extractor.extractor_name()
    assert not list(run.glob(".*.tmp"))
    # judged twice: FID, KID, precision and recall under the second judge too, named with it; the classifier
    # metrics once (the first judge's)
    second = metrics.MetricNames.for_count(200, evaluation.SECOND_JUDGE_SUFFIX)
    assert saved["extractor_lenet"] == saved["floor"]["extractor_lenet"] == \
        extractor.extractor_name(judge=extractor.SECOND)
    for key in (second.fid, second.kid, second.kid_std, second.precision, second.recall):
        assert isinstance(saved[key], float) and key in saved["floor"], key
    assert second.fid == "fid200_lenet" and saved[second.fid] > saved["floor"][second.fid]
    assert saved[second.fid] != saved["fid200"]  # another network's features, not a copy of the first's
    assert not [k for k in saved if k.startswith(("cscore", "modes", "share", "copy")) and k.endswith("_lenet")]


def test_bad_sample_counts_are_user_errors(ref):
    with pytest.raises(UserError, match=">= 10"):
        evaluation.check_n(5)
    with pytest.raises(UserError):
        ref.score(torch.zeros(3, 1, 32, 32, dtype=torch.uint8))
    with pytest.raises(TypeError, match="uint8"):
        ref.extractors[""](torch.zeros(20, 1, 32, 32))


def test_names_carry_counts_and_extractor(ref, floor_draw):
    r = ref.score(floor_draw[:100])
    assert r["extractor"] == extractor.extractor_name() and r["n_generated"] == 100 and r["n_real"] == 1000
    assert {"fid100", "kid100_mean", "kid100_std", "precision100", "recall100", "cscore100_mean", "modes100",
            "mode_kl100", "share100_9"} <= set(r)
    assert [metrics.count_tag(n) for n in (1000, 10000, 500, 2500)] == ["1k", "10k", "500", "2500"]
    json.dumps(r)  # a result is plain JSON
