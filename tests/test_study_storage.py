"""Opening a study storage for writing (ablations.storage) and a study in it (ablations.settings.open_study)."""

import optuna

from ablations import run
from ablations.settings import open_study
from gan_core.errors import UserError
from tests.study_helpers import in_process


def _open_storage(url: str) -> str:
    from ablations.storage import open_storage

    try:
        open_storage(url, heartbeat_s=1)
    except Exception as e:  # noqa: BLE001 - the test reports whatever a racing opener saw
        return f"{type(e).__name__}: {e}"
    return "ok"


def test_two_processes_creating_one_new_sqlite_storage_both_succeed(tmp_path):
    """Seen: 3 of 9 tries, one copy exited with "UNIQUE constraint failed: alembic_version.version_num"."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(2) as pool:
        for i in range(10):
            url = f"sqlite:///{tmp_path}/race{i}.db"
            assert pool.map(_open_storage, [url, url]) == ["ok", "ok"], i


def test_a_second_command_opening_a_new_study_the_moment_it_is_marked_sees_its_whole_identity(tmp_path, monkeypatch):
    """Seen in CI: two hosts started one step_ratio study on a new PostgreSQL storage; the second saw the "study"
    marker before "precision" was written, read the missing precision as fp32 (a study from before the record) and
    refused its own bf16 run. Here the second command opens the study right after the first writes its marker."""
    settings = run.settings_from_args(run.parser().parse_args(["--study", "step_ratio", *in_process(tmp_path)]))
    identity = {"study": "step_ratio", "base": "dcgan-cpu", "precision": "bf16 autocast"}  # not fp32: the gap
    real, seen = optuna.study.Study.set_user_attr, []

    def set_user_attr(study, key, value):
        real(study, key, value)
        if key == "study":
            try:
                open_study(settings, identity)  # the second command: it checks what the first has written
                seen.append("ok")
            except UserError as e:
                seen.append(str(e))

    monkeypatch.setattr(optuna.study.Study, "set_user_attr", set_user_attr)
    open_study(settings, identity)
    assert seen == ["ok"]
