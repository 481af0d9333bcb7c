"""Results on disk: atomic files, runs that never overwrite each other, a readable folder."""

import json
from datetime import datetime, timezone

import pandas as pd
import pytest

from gradbench import store
from gradbench.errors import UserError


def _row(**over):
    row = {name: None for name in store.SCHEMA.names}
    row.update(run_id="r", created_at=datetime.now(timezone.utc), seed=0, step=0, metric="variance", value=1.0,
               ci_low=0.5, ci_high=1.5, status="ok", task="toy-quadratic", estimator="gst")
    row.update(over)
    return row


def test_runs_get_distinct_folders(tmp_path):
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    ids = {store.create_run_dir(tmp_path, now)[0] for _ in range(20)}
    assert len(ids) == 20


def test_folder_reads_as_one_table_and_skips_sidecars_and_temporaries(tmp_path):
    for value in (1.0, 2.0):
        run_id, run_dir = store.create_run_dir(tmp_path)
        store.write_metrics(run_dir, [_row(run_id=run_id, value=value)])
        store.write_sidecar(run_dir, {"run_id": run_id})
        (run_dir / ".metrics.parquet.123.tmp").write_bytes(b"half a file")
    assert sorted(pd.read_parquet(tmp_path)["value"]) == [1.0, 2.0]
    assert sorted(store.read_results(tmp_path)["value"]) == [1.0, 2.0]


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    def broken(table, fh):
        fh.write(b"PAR1 partial")
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", broken)
    with pytest.raises(OSError):
        store.write_metrics(tmp_path, [_row()])
    assert list(tmp_path.iterdir()) == []


def test_rewrite_replaces_atomically(tmp_path):
    store.write_metrics(tmp_path, [_row(value=1.0)])
    store.write_metrics(tmp_path, [_row(value=1.0), _row(value=2.0)])
    assert len(pd.read_parquet(tmp_path / store.METRICS_FILE)) == 2
    assert [p.name for p in tmp_path.iterdir()] == [store.METRICS_FILE]


def test_sidecar_round_trip(tmp_path):
    store.write_sidecar(tmp_path, {"a": [1, 2], "b": "x"})
    assert store.read_sidecar(tmp_path) == {"a": [1, 2], "b": "x"}
    assert json.loads((tmp_path / "_run.json").read_text())["b"] == "x"


def test_read_results_errors(tmp_path):
    with pytest.raises(UserError, match="no results at"):
        store.read_results(tmp_path / "missing")
    with pytest.raises(UserError, match="holds no metrics.parquet"):
        store.read_results(tmp_path)
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(UserError, match="not a readable Parquet file"):
        store.read_results(tmp_path)
