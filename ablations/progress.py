"""The study's progress bar on stderr: what every worker, local or on another host, has trained so far."""

from __future__ import annotations

import sys
import threading

from reports.record import Outcome, TrialRecord


class StudyProgress:
    """A tqdm bar over the study's generator steps, refreshed every few seconds from what every worker (local or
    not) leaves behind: finished trials count in full, running ones by the last line of their stats.jsonl."""

    def __init__(self, study, planned: int, g_steps: int, enabled: bool):
        from tqdm import tqdm

        self.study, self.planned, self.g_steps = study, planned, g_steps
        self.bar = tqdm(total=planned * g_steps, unit="G step", file=sys.stderr, disable=not enabled,
                        dynamic_ncols=True, smoothing=0.05)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self):
        if not self.bar.disable:
            self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(timeout=10)
        self.bar.close()

    def _loop(self) -> None:
        while not self.stop.wait(2.0):
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - a progress bar never stops a study (a storage hiccup: try again)
                continue

    def poll(self) -> None:
        from gan_core.training.run_folder import STATS, RunFolder

        done, running = set(), []
        for t in map(TrialRecord.of, self.study.get_trials(deepcopy=False)):
            if t.outcome.ended:
                done.add(t.key or t.number)
            elif t.outcome is Outcome.RUNNING:
                running.append(t)
        steps, notes = len(done) * self.g_steps, []
        for t in running:
            last = (RunFolder(t.attrs["run_dir"]).read_jsonl(STATS) or [{}])[-1] if t.attrs.get("run_dir") else {}
            steps += last.get("g_step", 0)
            notes.append(f"{t.attrs.get('arm', '?')} seed {t.attrs.get('seed', '?')} "
                         f"{last.get('g_step', 0)}/{self.g_steps} ({last.get('g_images_per_s', 0):,.0f} img/s)")
        self.bar.n = min(steps, self.bar.total)
        self.bar.set_description(f"{min(len(done), self.planned)}/{self.planned} trials", refresh=False)
        self.bar.set_postfix_str("; ".join(notes), refresh=False)
        self.bar.refresh()
