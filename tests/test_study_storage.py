"""ablations.storage: opening a study storage for writing."""





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
