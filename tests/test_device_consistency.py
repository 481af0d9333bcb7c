"""Every tensor the harness creates takes the device and dtype of the problem (checked without a GPU).

Device: the problem lives on the CPU while ``torch.device("meta")`` is the default
device, so any tensor made without ``device=`` lands on ``meta`` and the first operation
mixing it with the problem's tensors raises ("Tensor on device meta is not on the expected
device cpu"). That is the same mistake that breaks a CUDA run (a stray CPU tensor next to
CUDA ones), caught on the CPU; meta is even stricter, since CUDA lets a 0-dim CPU tensor
mix in and meta does not. Problem construction, the exact reference, state
initialisation, warm-up and the measurement all run inside the context.

Dtype: the problem is float32 while float64 is the default dtype, so a stray tensor made
without ``dtype=`` is float64 and promotes the estimates; every per-draw gradient must
stay float32.
"""

from __future__ import annotations

import pytest
import torch

from gradbench.engine import MeasureConfig, View, init_state, measure, per_draw_gradients, warm_up
from gradbench.noise import NoiseSource
from gradbench.references import resolve_reference
from gradbench.registry import estimators, tasks
from test_conformance import PAIRS

CPU = torch.device("cpu")


@pytest.mark.parametrize("task_spec, est_spec", PAIRS)
def test_no_tensor_is_made_off_the_problems_device(task_spec, est_spec):
    with torch.device("meta"):
        problem = tasks.build(task_spec).problem(CPU, torch.float64)
        estimator = estimators.build(est_spec)
        problem = problem.for_estimator(estimator)
        reference = resolve_reference(problem, "exact", 0, 0)
        result = measure(problem, estimator, reference.gradient, MeasureConfig(64, seed=1, warmup=5, batches=4),
                         reference.variance)
    for group in result.groups.values():
        assert group.status == "ok", group.message
        assert group.mean.device == CPU


@pytest.mark.parametrize("task_spec, est_spec", PAIRS)
def test_estimates_keep_the_problems_dtype(task_spec, est_spec):
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        problem = tasks.build(task_spec).problem(CPU, torch.float32)
        estimator = estimators.build(est_spec)
        view = View(problem, estimator)
        state = init_state(view, estimator, 0)
        if estimator.stateful:
            state = warm_up(view, estimator, state, 5, 0)
        noise = NoiseSource(0, "test", CPU, torch.float32).draw_all(estimator.noise(view.template), 0, 8)
        grads = per_draw_gradients(view, estimator, state, noise)
    finally:
        torch.set_default_dtype(default)
    assert {g: t.dtype for g, t in grads.items()} == {g: torch.float32 for g in grads}


def test_the_meta_check_catches_a_stray_tensor():
    """The check has power: an estimator that builds a baseline without device= fails it."""
    from gradbench.contract import Surrogate
    from gradbench.estimators.score_function import Reinforce

    class Stray(Reinforce):
        name = "stray"

        def surrogate(self, dist, f, noise, state):
            out = super().surrogate(dist, f, noise, state)
            return Surrogate(out.value + torch.zeros(out.value.shape))  # the bug: no device=

    problem = tasks.build("toy-quadratic").problem(CPU, torch.float64)
    with torch.device("meta"), pytest.raises(RuntimeError, match="device"):
        measure(problem, Stray(), None, MeasureConfig(8, seed=0))


def _all_ok(out) -> None:
    import pandas as pd

    df = pd.read_parquet(out)
    assert len(df) and (df["status"] == "ok").all(), df.loc[df.status != "ok", "message"].tolist()


@pytest.mark.parametrize("task", ["mnist-vae", "mnist-vae-binary"])
def test_vae_training_makes_no_tensor_off_the_device(tmp_path, task):
    """Training, the ghost-norm measurement, the exact reference and the IWAE bound of a tiny VAE."""
    from gradbench.run import RunOptions, execute, prepare
    from test_mnist_vae_training import TINY, TINY_LATENTS

    ests = ["gst", "rloo(m=2)"] + (["disarm"] if task == "mnist-vae-binary" else [])
    plan = prepare(f"{task}({TINY}, {TINY_LATENTS[task]}, epochs=1, measure_every=1, iwae_every=1)", ests,
                   RunOptions(samples=8, out=str(tmp_path), device="cpu"))
    with torch.device("meta"):
        execute(plan)
    _all_ok(tmp_path)


def test_listops_training_makes_no_tensor_off_the_device(tmp_path):
    from gradbench.tasks.listops import data
    from gradbench.run import RunOptions, execute, prepare

    examples = data.generate(48, seed=4, max_length=20)
    for name, part in (("train", examples[:32]), ("valid", examples[32:40]), ("test", examples[40:])):
        data.write_tsv(tmp_path / f"{name}.tsv", part)
    task = (f"listops(dim=6, batch_size=16, epochs=1, checkpoints=1, data_dir='{tmp_path}', "
            "measure_sentences=3, measure_length=6)")
    plan = prepare(task, ["stgs", "rloo(m=2)"], RunOptions(samples=8, out=str(tmp_path / "out"), device="cpu"))
    with torch.device("meta"):
        execute(plan)
    _all_ok(tmp_path / "out")
