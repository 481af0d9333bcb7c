"""Train the VAE with one estimator; log curves per epoch; measure gradients at frozen parameters.

Per training step the estimator sees q(z | x) for the batch (logits with a leading
axis of one estimate copy, one unit per image) and f(z) = BCE(x, dec(z)) per image;
its surrogate's gradient reaches both the encoder (through the logits) and the
decoder (through f). The loss is mean_b f_b + KL(q ‖ prior) in closed form, as the GST
repository trains; estimators of a multi-sample bound (``requires`` importance
weights, e.g. VIMCO) optimise their own objective and get no KL term.

Per epoch (metric, all means over images): ``train/loss`` (the objective the optimiser
saw, averaged over the epoch's steps), ``train/neg_elbo`` and ``test/neg_elbo`` (one
exact sample, on the evaluation binarisation), ``test/iwae_<k>``. Every
``measure_every`` epochs and at the last: the gradient measurement (problem.py).

Randomness: parameter initialisation, data order and dynamic binarisation, estimator
noise and evaluation noise come from separate keyed streams of the run's seed, each
keyed by epoch or step, so a resumed run continues exactly as the uninterrupted one.
"""

from __future__ import annotations

import math
import time

import torch
from torch import Tensor

from gradbench.noise import NoiseSource, derive_seed
from gradbench.training import MovingVariance
from gradbench.view import View

from . import checkpoint
from . import data as mnist
from .evaluate import iwae, neg_elbo
from .model import VAE
from .problem import GROUPS, ImageBatch, VAEProblem


def build_model(task, device: torch.device, dtype: torch.dtype, generator: torch.Generator) -> VAE:
    """The task's VAE with PyTorch's default Linear initialisation, drawn from ``generator``."""
    with torch.device(device):  # made where it runs: no CPU copy to move (the init below re-draws every value)
        model = VAE(task.latent, task.latents, task.categories, list(task.encoder_hidden),
                    list(task.decoder_hidden), task.activation).to(dtype=dtype)
    with torch.no_grad():
        for layer in [*model.encoder.layers, *model.decoder.layers]:
            bound = 1 / math.sqrt(layer.in_features)  # kaiming_uniform(a=√5) and the bias rule both give this
            layer.weight.uniform_(-bound, bound, generator=generator)
            layer.bias.uniform_(-bound, bound, generator=generator)
    return model


def images(task, device, dtype) -> tuple[Tensor, Tensor, Tensor, object]:
    """(train grey levels, train eval targets, test eval targets, data) as ``[N, 784]`` tensors."""
    data = mnist.load(task.dataset, task.data_dir)
    as_tensor = lambda a: torch.as_tensor(a, device=device).to(dtype)  # noqa: E731
    grey_train = as_tensor(mnist.to_float(data.train_images))
    if task.binarize == "none":
        return grey_train, grey_train, as_tensor(mnist.to_float(data.test_images)), data
    # Dynamic training is evaluated on one fixed draw, so every epoch and estimator sees the same targets.
    fixed_train, fixed_test = mnist.static_binarized(data)
    return grey_train, as_tensor(fixed_train), as_tensor(fixed_test), data


def train(task, estimator, session) -> None:
    device, dtype = session.device, session.dtype
    grey_train, eval_train, eval_test, data = images(task, device, dtype)
    if data.is_embedded_subset:
        session.note(mnist.EMBEDDED_NOTICE)
    model = build_model(task, device, dtype, session.generator("init"))
    optimizer = torch.optim.Adam(model.parameters(), lr=task.lr)
    importance = "importance_weights" in estimator.requires
    probe = ImageBatch(model, grey_train[:1], torch.zeros(1, *model.latent_shape, device=device, dtype=dtype))
    state = estimator.init(View(probe, estimator).template, session.generator("estimator"))
    # The papers' training-time "variance" of the encoder gradient (docs/frontier.md), if asked for.
    tracker = MovingVariance(task.moving_variance) if task.moving_variance else None
    start, state = (_restore(task, estimator, model, optimizer, state, session, tracker) if task.resume
                    else (0, state))
    measure_x = eval_test[: task.measure_images]
    if task.epochs == 0:  # re-evaluate and re-measure at the checkpoint
        _evaluate(task, model, eval_train, eval_test, session, start, with_iwae=True)
        if task.measure_every:
            _measure(model, measure_x, estimator, state, session, start, importance)
        return
    last = start + task.epochs
    steps_per_epoch = math.ceil(grey_train.shape[0] / task.batch_size)
    noise = NoiseSource(session.seed, "train", device, dtype)
    with session.track(f"{estimator.label} · training", task.epochs * steps_per_epoch) as bar:
        for epoch in range(start + 1, last + 1):
            started = time.perf_counter()
            data_gen = session.generator(f"data:{epoch}")
            order = torch.randperm(grey_train.shape[0], generator=data_gen, device=device)
            losses = []
            model.train()
            for i, idx in enumerate(order.split(task.batch_size)):
                if task.binarize == "dynamic":
                    x = torch.bernoulli(grey_train[idx], generator=data_gen)
                else:
                    x = eval_train[idx]  # the fixed draw (static) or the grey levels (none)
                step = (epoch - 1) * steps_per_epoch + i
                loss, state = _step(model, optimizer, estimator, state, x, noise, step, importance, tracker)
                losses.append(loss)
                if bar:
                    bar(1)
            curves = {"train/loss": float(torch.stack(losses).mean()),
                      "train/seconds": time.perf_counter() - started}
            if tracker is not None:
                curves["train/encoder_moving_variance"] = tracker.value()
                curves["train/encoder_moving_variance_debiased"] = tracker.value(debiased=True)
            _evaluate(task, model, eval_train, eval_test, session, epoch, curves, _due(task.iwae_every, epoch, last))
            if _due(task.checkpoint_every, epoch, last):
                _save(task, session, estimator, model, optimizer, state, epoch, epoch * steps_per_epoch, tracker)
            if _due(task.measure_every, epoch, last):
                _measure(model, measure_x, estimator, state, session, epoch, importance)


def _restore(task, estimator, model, optimizer, state, session, tracker=None):
    """Load ``task.resume`` into the model and optimiser; returns (its epoch, the estimator state).

    The estimator's own state (and the moving-average variance) comes back only for the
    estimator that saved it; any other estimator starts from its initial state.
    """
    saved = checkpoint.load(task.resume, task.architecture())
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    if saved.get("estimator") == estimator.label:
        state = _to_device(saved.get("estimator_state"), session.device)
        if tracker is not None and saved.get("moving_variance") is not None:
            tracker.load_state_dict(_to_device(saved["moving_variance"], session.device))
    session.note(f"resumed from {task.resume} (epoch {saved['epoch']})")
    return int(saved["epoch"]), state


def _due(every: int, epoch: int, last: int) -> bool:
    """Every ``every`` epochs and at the last one (never when ``every`` is 0)."""
    return bool(every) and (epoch % every == 0 or epoch == last)


def _step(model, optimizer, estimator, state, x, noise: NoiseSource, step: int, importance: bool,
          tracker: MovingVariance | None = None):
    """One optimiser step; returns (the loss as a tensor, not synced to the host; the estimator's new state).

    ``tracker`` sees the encoder's gradient of the loss the optimiser steps on (estimate plus exact KL).
    """
    logits = model.logits(x)
    view = View(ImageBatch(model, x, logits), estimator)
    dist = view.distribution({"logits": logits.unsqueeze(0)})
    draws = noise.draw_all(estimator.noise(view.template), step, step + 1)
    out = estimator.surrogate(dist, view.objective, draws, state)
    loss = out.value.sum() / x.shape[0]
    if not importance:
        loss = loss + model.kl(logits).mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if tracker is not None:
        tracker.update([p.grad for p in model.encoder.parameters()])
    optimizer.step()
    state = estimator.update(state, dist, view.objective, draws, out)
    return loss.detach(), state


def _evaluate(task, model, eval_train, eval_test, session, epoch: int, curves: dict | None = None,
              with_iwae: bool = False) -> None:
    model.eval()
    key = derive_seed(session.seed, "eval", epoch)
    values = dict(curves or {})
    noise = lambda phase: NoiseSource(key, phase, session.device, session.dtype)  # noqa: E731
    values["train/neg_elbo"] = neg_elbo(model, eval_train, noise("train-elbo"))
    values["test/neg_elbo"] = neg_elbo(model, eval_test, noise("test-elbo"))
    if task.iwae_samples and with_iwae:
        values[f"test/iwae_{task.iwae_samples}"] = iwae(model, eval_test, task.iwae_samples, noise("test-iwae"))
    session.log(epoch, values)  # the session shows it as the progress line


def _measure(model, images: Tensor, estimator, state, session, epoch: int, importance: bool) -> None:
    if importance:
        # The m-sample bound's gradient needs its own reference; measuring it against the
        # ELBO gradient would report a "bias" that is only a different objective.
        session.skip_measurement(epoch, GROUPS, f"{estimator.label} optimises a multi-sample bound; "
                                 "mnist-vae has no reference gradient for that objective yet")
        return
    session.measure(epoch, VAEProblem(model, images), state)  # rows recorded, progress line shown


def _save(task, session, estimator, model, optimizer, state, epoch: int, step: int, tracker=None) -> None:
    path = session.checkpoint_path(epoch)
    checkpoint.save(path, {
        "task": task.name, "architecture": task.architecture(), "task_params": task.params_dict(),
        "epoch": epoch, "step": step, "seed": session.seed, "estimator": estimator.label,
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "estimator_state": state,
        "moving_variance": tracker.state_dict() if tracker is not None else None,
    })


def _to_device(value, device):
    if isinstance(value, Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_device(v, device) for v in value)
    return value
