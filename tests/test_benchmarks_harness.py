"""The benchmark bookkeeping (benchmarks/harness.py): ratios, utilisation and round plans that the
saved results depend on. Nothing here is timed."""

from __future__ import annotations

import json

import torch

from benchmarks import harness

CPU = torch.device("cpu")


def test_speedups_land_in_the_project_case_whichever_case_runs_first():
    early, late = harness.Comparisons(), harness.Comparisons()
    info_early, info_late, info_bf16 = {}, {}, {}
    early.add_project("cpu m", info_early, 2.0, "fp32")
    early.add_baseline("cpu m", "blog", 5.0, paired_project_s=2.5)
    late.add_baseline("cpu m", "blog", 5.0, paired_project_s=2.5)
    late.add_project("cpu m", info_late, 2.0, "fp32")
    late.add_project("cpu m", info_bf16, 1.0, "bf16")
    late.add_baseline("cpu other", "blog", 99.0)  # another model's baseline never leaks in
    for info in (info_early, info_late):
        assert info == {"blog_s_per_iteration": 5.0, "speedup_vs_blog": 2.5, "speedup_vs_blog_paired": 2.0}
    assert info_bf16 == {"blog_s_per_iteration": 5.0, "speedup_vs_blog": 5.0}  # pairs are made with fp32 only


def test_utilisation_follows_the_best_peak_seen_in_the_session():
    peak = harness.MatmulPeak()
    first = peak.measure(CPU, "float32")["peak_flops"]
    info: dict = {}
    peak.track(info, CPU, "float32", first / 2)
    assert info["utilisation"] == 0.5
    peak.best[("cpu", "float32")] = first / 1000  # as if the first measurement had met a very busy moment
    peak.measure(CPU, "float32")
    assert peak.best[("cpu", "float32")] > first / 1000  # a better measurement rewrites the tracked cases
    assert info["utilisation"] == (first / 2) / peak.best[("cpu", "float32")]
    best = peak.best[("cpu", "float32")]
    peak.best[("cpu", "float32")] = best * 1000  # and a worse one changes nothing
    peak.measure(CPU, "float32")
    assert peak.best[("cpu", "float32")] == best * 1000


def test_round_plans_depend_on_flops_only():
    assert harness.plan_rounds(CPU, 1e15) == (1, 0)  # one round of a costly case, warmed up by its loop only
    assert harness.plan_rounds(CPU, 1e6) == (harness.CPU_MAX_ROUNDS, 1)
    few, _ = harness.plan_rounds(CPU, harness.CPU_ASSUMED_FLOPS)  # about 1 s an iteration
    more, _ = harness.plan_rounds(CPU, harness.CPU_ASSUMED_FLOPS, compared=True)  # loops compared: more rounds
    assert 1 < few < more < harness.CPU_MAX_ROUNDS


def test_peak_memory_reports_a_peak_at_least_the_rss_before():
    import mmap

    with harness.PeakMemory(CPU) as memory:
        # 64 MiB of fresh pages, touched. Not a tensor: after earlier tests freed large blocks, glibc's dynamic mmap
        # threshold can serve a 64 MiB tensor from heap memory that is already resident (seen once: a peak below
        # the RSS before, the block never counted).
        block = mmap.mmap(-1, 64 * 2**20)
        block.write(b"\x01" * len(block))
        block.close()
    assert memory.info["peak_memory_mb"] >= memory.info["rss_before_mb"] > 0
    if memory.info["peak_memory_kind"].endswith("(case)"):
        assert memory.info["peak_memory_mb"] >= memory.info["rss_before_mb"] + 60


def test_results_file_names_are_safe_slugs():
    name = harness.slug("cpu")
    assert name.startswith("cpu-") and name == name.lower()
    assert all(c.isalnum() or c == "-" for c in name)


def test_the_gpu_checks_run_on_the_cpu_and_judge_what_they_measure(capsys):
    """benchmarks/gpu_checks.py is run on a GPU machine in one prepared script: its logic is tested here."""
    from benchmarks import gpu_checks

    assert gpu_checks.main(["--device", "cpu", "--iterations", "2", "--k", "2", "--width", "0.0625"]) == 0
    report = json.loads(capsys.readouterr().out)
    graphs, packed = report["graphs"], report["packed"]
    assert graphs["fallback"].startswith("--compile reduce-overhead captures CUDA graphs")
    assert graphs["first_iteration_max_rel"] == 0.0 and graphs["passed"]  # the fallback is eager: the same losses
    assert packed["k"] == 2 and 0 <= packed["first_iteration_max_rel"] <= gpu_checks.FIRST_ITERATION_RTOL
    bad = gpu_checks._rel(torch.tensor([1.0, float("nan")]), torch.tensor([1.0, 1.0]))
    assert bad.tolist() == [0.0, float("inf")]  # a NaN loss can never pass as close
