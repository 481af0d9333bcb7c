"""Helpers for tests of reports and comparisons: synthetic rows in the store's schema, a fixture."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone

import pandas as pd
import pytest
from scipy import stats as sps

from gradbench import store

Z95 = 1.959963984540054
T19 = float(sps.t.ppf(0.975, 19))  # variance intervals: batch means over 20 batches


def row(metric: str = "variance", value: float = 1.0, *, se: float | None = None, **fields) -> dict:
    """One row; ``se`` sets the 95% interval the way gradbench.stats builds it for ``metric``."""
    base = dict(
        run_id="run", created_at=datetime(2026, 1, 1, tzinfo=timezone.utc), gradbench_version="0.1.0",
        torch_version="2.13.0", device="cpu", dtype="float64", seed=0, task="toy-quadratic", task_version=1,
        task_params=json.dumps({"k": 10}), estimator="gst", estimator_version=1,
        estimator_params=json.dumps({"gap": 1.0, "hard": True, "tau": 1.0}), estimator_label="gst",
        family="categorical", engine="vectorized", warmup=0, step=0, param_group="logits", n_estimates=10_000,
        reference="exact", reference_samples=0, metric=metric, value=value, ci_low=math.nan, ci_high=math.nan,
        status="ok", message="",
    )
    base.update(fields)
    if se is not None:
        if metric in ("bias_norm", "relative_bias"):
            base["ci_low"], base["ci_high"] = max(value - Z95 * se, 0.0), value + Z95 * se
        else:
            n = base["n_estimates"]
            q = T19 if metric in ("variance", "variance_per_element", "seconds_per_estimate") else float(
                sps.t.ppf(0.975, n - 1))
            base["ci_low"], base["ci_high"] = value - q * se, value + q * se
    return base


def frame(rows: list[dict]) -> pd.DataFrame:
    """Rows as read back from disk (same dtypes)."""
    import pyarrow as pa

    return pa.Table.from_pylist(rows, schema=store.SCHEMA).to_pandas()


def estimator_fields(label: str, **params) -> dict:
    """estimator, estimator_params and estimator_label for a spec like gst(tau=0.5)."""
    name = label.split("(")[0]
    defaults = {"gst": {"gap": 1.0, "hard": True, "tau": 1.0}, "stgs": {"tau": 1.0}, "rloo": {"m": 4},
                "reinforce": {}, "gr-mc": {"k": 10, "tau": 1.0}}[name]
    return dict(estimator=name, estimator_params=json.dumps({**defaults, **params}, sort_keys=True),
                estimator_label=label)


@pytest.fixture
def one_thread():
    """Tiny tensors: one intra-op thread is several times faster, far more so on a busy machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
