"""mnist-vae training through `gradbench run`: curves, measurements, reproducibility, checkpoints,
resumption, interruption and bad input. Tiny models (2 × 3 latents, one hidden layer of 16) on
the embedded subset, so every run takes seconds."""

import json
from dataclasses import dataclass

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from gradbench import Estimator, Surrogate
from gradbench.cli import app
from gradbench.registry import estimators
from gradbench.run import RunOptions, execute, prepare

TINY = "encoder_hidden=[16], batch_size=1000, measure_images=20, iwae_samples=4"
TINY_LATENTS = {"mnist-vae": "latents=2, categories=3", "mnist-vae-binary": "latents=3"}
runner = CliRunner()


def run(task_args: str, *ests: str, out, task="mnist-vae", samples=20, **options):
    plan = prepare(f"{task}({TINY}, {TINY_LATENTS[task]}, {task_args})", list(ests) or ["stgs"],
                   RunOptions(samples=samples, out=str(out), **options))
    return execute(plan)


def cli(task: str, out):
    return runner.invoke(app, ["run", "--task", task, "-e", "gst", "--out", str(out)])


def frame(out):
    return pd.read_parquet(out)


def test_training_logs_curves_and_measures_along_the_way(tmp_path):
    run("epochs=2, measure_every=1, iwae_every=2", "stgs", "gst(gap=1.2, tau=0.5)", out=tmp_path)
    df = frame(tmp_path)
    assert (df["status"] == "ok").all(), df.loc[df.status != "ok", "message"].tolist()
    curves = df[df.param_group == ""]
    for label in ("stgs", "gst(gap=1.2, tau=0.5)"):
        mine = curves[curves.estimator_label == label]
        per_epoch = mine.groupby("step")["metric"].apply(set).to_dict()
        assert {"train/loss", "train/neg_elbo", "test/neg_elbo"} <= per_epoch[1]
        assert "test/iwae_4" in per_epoch[2] and "test/iwae_4" not in per_epoch[1]
        iwae, elbo = (mine[(mine.step == 2) & (mine.metric == m)]["value"].item()
                      for m in ("test/iwae_4", "test/neg_elbo"))
        assert 0 < iwae < elbo + 30  # a bound on −log p(x), near the one-sample ELBO
    grads = df[df.param_group != ""]
    assert set(grads["param_group"]) == {"encoder", "logits"} and set(grads["step"]) == {1, 2}
    assert set(grads["reference"]) == {"exact"}  # 3² latent configurations per image: enumerated
    assert {"variance_per_element", "bias_norm", "relative_bias", "cosine"} <= set(grads["metric"])
    assert (grads["n_estimates"] == 20).all()


def test_same_seed_same_numbers(tmp_path):
    for out in ("a", "b"):
        run("epochs=1, measure_every=1", "gst", out=tmp_path / out, seed=4)
    timing = ["train/seconds", "seconds_per_estimate", "work_normalized_variance"]
    a, b = (frame(tmp_path / o).sort_values(["step", "param_group", "metric"]) for o in ("a", "b"))
    a, b = (d[~d["metric"].isin(timing)] for d in (a, b))
    assert a["value"].tolist() == b["value"].tolist()


def test_checkpoint_resume_continues_exactly_and_remeasures(tmp_path):
    full = run("epochs=2, measure_every=0, checkpoint_every=1", "gst", out=tmp_path / "full")
    ckpt = full.run_dir / "_checkpoints" / "gst-seed0-step1.pt"
    assert ckpt.is_file() and (full.run_dir / "_checkpoints" / "gst-seed0-step2.pt").is_file()
    run(f"epochs=1, measure_every=0, resume={str(ckpt)!r}", "gst", out=tmp_path / "resumed")
    pick = lambda out: frame(out).query("step == 2 and metric != 'train/seconds'").sort_values("metric")  # noqa: E731
    assert pick(tmp_path / "full")["value"].tolist() == pick(tmp_path / "resumed")["value"].tolist()
    # epochs=0: evaluate and measure at the checkpoint, with any estimator.
    run(f"epochs=0, measure_every=1, resume={str(ckpt)!r}", "gst", "rloo", out=tmp_path / "again")
    again = frame(tmp_path / "again")
    assert set(again["step"]) == {1} and set(again["estimator"]) == {"gst", "rloo"}
    assert {"encoder", "logits"} <= set(again["param_group"])


def test_binary_task_trains_with_native_and_categorical_view_estimators(tmp_path):
    run("epochs=1, measure_every=1", "reinforce", "stgs", task="mnist-vae-binary", out=tmp_path)
    df = frame(tmp_path)
    assert (df["status"] == "ok").all()
    assert set(df.loc[df.param_group != "", "family"]) == {"bernoulli", "categorical"}


def test_moving_average_variance_is_logged_without_changing_training_and_survives_resume(tmp_path):
    """moving_variance=d logs the DisARM/RODEO encoder variance each epoch; the run is otherwise unchanged."""
    on = run("epochs=2, measure_every=0, checkpoint_every=1, moving_variance=0.999", "rloo",
             task="mnist-vae-binary", out=tmp_path / "on")
    run("epochs=2, measure_every=0", "rloo", task="mnist-vae-binary", out=tmp_path / "off")
    names = ["train/encoder_moving_variance", "train/encoder_moving_variance_debiased"]
    with_mv, without = frame(tmp_path / "on"), frame(tmp_path / "off")
    logged = with_mv[with_mv.metric.isin(names)]
    assert len(logged) == 4 and (logged["status"] == "ok").all() and (logged["value"] > 0).all()
    same = lambda d: d[d.metric.isin(["train/loss", "train/neg_elbo", "test/neg_elbo"])].sort_values(  # noqa: E731
        ["step", "metric"])["value"].tolist()
    assert same(with_mv) == same(without)
    # Resumed from epoch 1, epoch 2's moving averages equal the uninterrupted run's.
    ckpt = on.run_dir / "_checkpoints" / "rloo-seed0-step1.pt"
    run(f"epochs=1, measure_every=0, moving_variance=0.999, resume={str(ckpt)!r}", "rloo",
        task="mnist-vae-binary", out=tmp_path / "resumed")
    resumed = frame(tmp_path / "resumed")
    pick = lambda d: d[d.metric.isin(names) & (d.step == 2)].sort_values("metric")["value"].tolist()  # noqa: E731
    assert pick(resumed) == pick(with_mv)


@dataclass(frozen=True)
class ToyIWAE(Estimator):
    """A multi-sample-bound estimator stand-in: REINFORCE on −log w, asking for importance weights."""

    name = "toy-iwae"
    unbiased = True
    families = ("*",)
    requires = ("importance_weights",)

    def surrogate(self, dist, f, noise, state):
        x = dist.sample(noise["sample"])
        log_w = f.log_joint(x) - dist.log_prob_units(x)
        value = -log_w - (-log_w).detach() * (dist.log_prob_units(x) - dist.log_prob_units(x).detach())
        return Surrogate(value.sum(1))


def test_importance_weight_estimators_train_without_kl_and_skip_measurement(tmp_path, monkeypatch):
    estimators.names()  # load the catalog, then register on a copy that the monkeypatch undoes
    monkeypatch.setattr(estimators, "_entries", dict(estimators._entries))
    estimators.register(ToyIWAE)
    run("epochs=1, measure_every=1", "toy-iwae", out=tmp_path)
    df = frame(tmp_path)
    assert (df.loc[df.param_group == "", "status"] == "ok").all()
    skipped = df[df.param_group != ""]
    assert set(skipped["status"]) == {"skipped"} and set(skipped["param_group"]) == {"encoder", "logits"}
    assert "multi-sample bound" in skipped["message"].iloc[0]


@dataclass(frozen=True)
class FProbe(Estimator):
    """REINFORCE that records the size of the f it is handed: one estimate copy in training, many when measured."""

    name = "f-probe"
    unbiased = True
    families = ("*",)
    seen = {"training": [], "measurement": []}

    def surrogate(self, dist, f, noise, state):
        x = dist.sample(noise["sample"])
        fx = f(x)
        self.seen["training" if fx.shape[0] == 1 else "measurement"].append(float(fx.detach().mean()))
        log_q = dist.log_prob_units(x)
        return Surrogate((fx + fx.detach() * (log_q - log_q.detach())).sum(1))


def test_estimators_are_measured_on_the_f_they_were_trained_on(tmp_path, monkeypatch):
    """Learned parts that are not scale-equivariant in f (RODEO's network, NVIL's baseline) need the same f
    when measured as in training: BCE per image, not BCE/B (which once made RODEO's frozen variance 4–10×
    too large on the VAE)."""
    estimators.names()
    monkeypatch.setattr(estimators, "_entries", dict(estimators._entries))
    estimators.register(FProbe)
    FProbe.seen["training"].clear(), FProbe.seen["measurement"].clear()
    run("epochs=1, measure_every=1", "f-probe", task="mnist-vae-binary", out=tmp_path)
    train, measured = (sum(v) / len(v) for v in (FProbe.seen["training"], FProbe.seen["measurement"]))
    assert 0.8 < measured / train < 1.25, (train, measured)  # both ≈ 540 nats per image at initialisation


def test_interrupted_run_leaves_a_readable_folder(tmp_path, monkeypatch):
    from gradbench.tasks.mnist_vae import train

    calls = []
    real = train._measure

    def interrupt_on_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train, "_measure", interrupt_on_second)
    with pytest.raises(KeyboardInterrupt):
        run("epochs=3, measure_every=1", "gst", out=tmp_path)
    (run_dir,) = tmp_path.iterdir()
    df = frame(tmp_path)
    assert set(df["step"]) == {1, 2} and (df["status"] == "ok").all()  # epoch 1 measured, epoch 2 logged
    assert json.loads((run_dir / "_run.json").read_text())["status"] == "interrupted"


@pytest.mark.parametrize("task, message", [
    ("mnist-vae(data_dir='/nonexistent/mnist')", "/nonexistent/mnist"),
    ("mnist-vae(dataset='fashion-mnist', data_dir='/nonexistent/fm')", "/nonexistent/fm"),
    ("mnist-vae(resume='/nonexistent/ckpt.pt')", "checkpoint /nonexistent/ckpt.pt does not exist"),
    ("mnist-vae(epochs=0)", "epochs=0 needs resume"),
    ("mnist-vae(measure_images=5000)", "measure_images=5000 but the mnist-5k-subset test set has 1000"),
    ("mnist-vae(binarize='dynamc')", "did you mean 'dynamic'"),
    ("mnist-vae(preset='gst')", "preset must be one of 'gst-paper'"),
    ("mnist-vae(preset='reinmax-8x5')", "did you mean 'reinmax-8x4'"),
    ("mnist-vae-binary(preset='rodeo-fashion')", "fashion-mnist"),
    ("mnist-vae(lr=0)", "lr must be > 0"),
    ("mnist-vae(latents=0)", "latents must be ≥ 1"),
    ("mnist-vae(categories=1)", "categories must be ≥ 2"),
    ("mnist-vae(encoder_hidden=[512, 0])", "encoder_hidden[1] must be ≥ 1"),
    ("mnist-vae(epoch=3)", "did you mean 'epochs'"),
    ("mnist-vae-binary(categories=4)", "unknown parameter 'categories'"),
    ("mnist-vae-binary(moving_variance=1.0)", "moving_variance must be ≥ 0 and < 1"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, task, message):
    out = tmp_path / "res"
    result = cli(task, out)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and message in " ".join(result.output.split()), result.output
    assert not out.exists()


def test_corrupt_or_foreign_checkpoints_are_rejected(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    result = cli(f"mnist-vae(resume={str(bad)!r})", tmp_path / "r")
    assert result.exit_code == 2 and "cannot be read" in result.output
    full = run("epochs=1, measure_every=0, checkpoint_every=1", "gst", out=tmp_path / "ok")
    ckpt = full.run_dir / "_checkpoints" / "gst-seed0-step1.pt"
    result = cli(f"mnist-vae(latents=5, resume={str(ckpt)!r})", tmp_path / "r")
    assert result.exit_code == 2 and "has latents=2 but the task has latents=5" in result.output
    torch.save({"something": 1}, bad)
    result = cli(f"mnist-vae(resume={str(bad)!r})", tmp_path / "r")
    assert result.exit_code == 2 and "not a gradbench mnist-vae checkpoint" in result.output


def test_presets_fill_only_what_is_not_given():
    from gradbench.registry import tasks

    paper = tasks.build("mnist-vae(preset='gst-paper')")
    assert (paper.epochs, paper.binarize, paper.measure_every) == (40, "none", 1)
    mine = tasks.build("mnist-vae(preset='gst-paper', binarize='dynamic', epochs=2)")
    assert (mine.epochs, mine.binarize, mine.measure_every) == (2, "dynamic", 1)
    default = tasks.build("mnist-vae")
    assert (default.epochs, default.binarize, default.decoder_hidden) == (50, "dynamic", (256, 512))
    assert (default.categories, default.latents, default.dataset) == (10, 30, "mnist")


def test_reinmax_grid_presets_set_the_latent_shape_and_grey_level_targets():
    from gradbench.registry import tasks

    small = tasks.build("mnist-vae(preset='reinmax-8x4')")
    assert (small.categories, small.latents, small.binarize, small.epochs) == (8, 4, "none", 50)
    assert small.architecture()["categories"] == 8
    wide = tasks.build("mnist-vae(preset='reinmax-32x64', latents=3)")
    assert (wide.categories, wide.latents) == (32, 3)


def test_reinmax_8x4_preset_gets_the_exact_encoder_gradient():
    """8^4 = 4,096 configurations per image: under the enumeration cap, so the reference is exact."""
    from gradbench.tasks.mnist_vae import reference
    from gradbench.tasks.mnist_vae.model import VAE
    from gradbench.tasks.mnist_vae.problem import VAEProblem

    torch.manual_seed(0)
    model = VAE("categorical", latents=4, categories=8, encoder_hidden=[16], decoder_hidden=[16], activation="relu")

    problem = VAEProblem(model, torch.rand(3, 784))
    assert reference.configurations(problem).shape == (4096, 4, 8)
    assert problem.exact_gradient() is not None


def test_rodeo_binary_preset():
    from gradbench.registry import tasks

    rodeo = tasks.build("mnist-vae-binary(preset='rodeo')")
    assert (rodeo.latents, rodeo.batch_size, rodeo.lr, rodeo.binarize, rodeo.dataset) == (200, 100, 1e-3, "dynamic",
                                                                                          "mnist")
    default = tasks.build("mnist-vae-binary")
    assert (default.batch_size, default.lr) == (50, 1e-3)
