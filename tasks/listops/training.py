"""Train the Gumbel Tree-LSTM on ListOps with an estimator choosing the merges.

Each step builds the batch's merge decisions as a
:class:`~gradbench.families.sequence.CategoricalSequence` with the live weights (one copy)
and asks it for the estimator's surrogate: a categorical estimator (STGS, GR-MC,
GST, ...) is applied to each merge in turn, a score-function estimator to whole
trees (``gradbench.families.sequence``). The loss is the surrogate's mean over the batch.
Evaluation builds every tree by argmax merges and scores all of a set, never
a last batch. At checkpoints the weights are frozen and the session measures the
estimator's gradient of the merge scorer (``query``) and of the whole model
(``model``) on a fixed batch of short official validation sentences.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from gradbench.contract import Estimator
from gradbench.noise import NoiseSource, derive_seed
from gradbench.families.sequence import seen_stepwise
from gradbench.training import TrainingSession

from . import data
from .model import Batch, MergeProcess, init_weights, sequence
from .problem import ListOpsProblem

EVAL_TOKENS = 16_384  # padded tokens per evaluation batch (long sentences come in small batches)
BUCKET = 50  # batches whose sentences are sorted by length together (less padding, still shuffled)


@dataclass
class Splits:
    """Examples to train on, the validation set, an optional test set, and where they came from."""

    train: list[data.Example]
    valid: list[data.Example]
    test: list[data.Example]
    source: str


def batches(examples: Sequence[data.Example], size: int, generator: torch.Generator) -> list[list[data.Example]]:
    """One epoch's batches: shuffled, then sorted by length within buckets of BUCKET batches."""
    order = torch.randperm(len(examples), generator=generator, device="cpu").tolist()
    out = []
    for start in range(0, len(order), size * BUCKET):
        bucket = sorted(order[start : start + size * BUCKET], key=lambda i: len(examples[i].tokens))
        out += [[examples[i] for i in bucket[j : j + size]] for j in range(0, len(bucket), size)]
    shuffled = torch.randperm(len(out), generator=generator, device="cpu").tolist()
    return [out[i] for i in shuffled]


@torch.no_grad()
def evaluate(weights: dict[str, Tensor], examples: Sequence[data.Example], device) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of argmax-merge trees over every example."""
    ordered = sorted(examples, key=lambda e: len(e.tokens))
    w = {k: v.detach().unsqueeze(0) for k, v in weights.items()}
    correct, loss, i = 0, 0.0, 0
    while i < len(ordered):
        size = max(1, EVAL_TOKENS // len(ordered[min(i + 255, len(ordered) - 1)].tokens))
        batch = Batch.of(ordered[i : i + min(size, 256)], device)
        logits = MergeProcess(w, batch).greedy()[0]
        correct += int((logits.argmax(-1) == batch.labels).sum())
        loss += float(torch.nn.functional.cross_entropy(logits, batch.labels, reduction="sum"))
        i += len(batch)
    return correct / len(ordered), loss / len(ordered)


def dropout_masks(batch: Batch, dim: int, rate: float, generator: torch.Generator, dtype) -> dict | None:
    """Scaled keep-masks for the embeddings and the classifier's two inputs (from an explicit generator)."""
    if rate == 0:
        return None
    size, length = batch.tokens.shape

    def keep(*shape):
        u = torch.rand(1, *shape, generator=generator, device=batch.tokens.device, dtype=dtype)
        return (u >= rate).to(dtype) / (1 - rate)

    return {"embedding": keep(size, length, dim), "mlp": (keep(size, dim), keep(size, dim))}


def measurement_batch(valid: Sequence[data.Example], sentences: int, max_tokens: int, device) -> Batch:
    """The first ``sentences`` validation sentences of at most ``max_tokens`` tokens."""
    short = [e for e in valid if len(e.tokens) <= max_tokens][:sentences]
    if not short:
        from gradbench.errors import DataError

        raise DataError(f"no validation sentence has at most {max_tokens} tokens; raise measure_length")
    return Batch.of(short, device)


def train(task, estimator: Estimator, session: TrainingSession, splits: Splits) -> None:
    """The training loop; ``task`` is a resolved :class:`ListOps` (every preset value filled in)."""
    device, dtype = session.device, session.dtype
    weights = init_weights(task.dim, session.generator("init"), dtype, device)
    params = [p.requires_grad_(True) for p in weights.values()]
    optimizer = torch.optim.Adam(params, lr=task.lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=4)
    # Batch order on the CPU (randperm wants a CPU generator); dropout masks on the device.
    order = torch.Generator("cpu").manual_seed(derive_seed(session.seed, "data"))
    drops = session.generator("dropout")
    stepwise = seen_stepwise(estimator)
    state, state_ready = None, not estimator.stateful
    probe = measurement_batch(splits.valid, task.measure_sentences, task.measure_length, device)
    per_epoch = math.ceil(len(splits.train) / task.batch_size)
    total = task.epochs * per_epoch
    checkpoints = {round(total * (i + 1) / task.checkpoints) for i in range(task.checkpoints)}
    session.notes.append(f"listops: {len(splits.train)} training examples ({splits.source}), "
                         f"{len(splits.valid)} validation, {len(splits.test)} test; {total} steps")

    def measure(step: int) -> None:
        if task.measure == "none" or (task.measure == "ends" and 0 < step < total):
            return
        problem = ListOpsProblem({k: v.detach() for k, v in weights.items()}, probe)
        session.measure(step, problem, state=state if estimator.stateful else None)

    measure(0)
    step, seconds = 0, 0.0
    running = {"loss": 0.0, "correct": 0.0, "count": 0}
    for epoch in range(task.epochs):
        for examples in batches(splits.train, task.batch_size, order):
            started = time.perf_counter()
            batch = Batch.of(examples, device)
            w = {k: v.unsqueeze(0) for k, v in weights.items()}
            dist = sequence(w, batch, dropout_masks(batch, task.dim, task.dropout, drops, dtype))
            template = dist.step_template() if stepwise else dist
            if not state_ready:
                state, state_ready = estimator.init(template, session.generator("estimator")), True
            source = NoiseSource(derive_seed(session.seed, "train"), f"step{step}", device, dtype)
            noise = source.draw_all(estimator.noise(template), 0, 1)
            out = dist.surrogate(estimator, noise, state, stepwise)
            optimizer.zero_grad(set_to_none=True)
            (out.value.sum() / len(batch)).backward()
            torch.nn.utils.clip_grad_norm_(params, task.clip)
            optimizer.step()
            state = estimator.update(state, dist, dist.objective, noise, out)
            # Tensors, not floats: no host sync per step on a GPU.
            running["loss"] += out.value.detach().sum()
            running["correct"] += (dist.process.predictions == batch.labels).to(dtype).mean() * len(batch)
            running["count"] += len(batch)
            step += 1
            seconds += time.perf_counter() - started
            if step in checkpoints:
                values = {"train/loss": float(running["loss"]) / running["count"],
                          "train/accuracy": float(running["correct"]) / running["count"],
                          "train/seconds": seconds, "train/epoch": step / per_epoch,
                          "lr": optimizer.param_groups[0]["lr"]}
                values["valid/accuracy"], values["valid/loss"] = evaluate(weights, splits.valid, device)
                if splits.test:
                    values["test/accuracy"], values["test/loss"] = evaluate(weights, splits.test, device)
                session.log(step, values)
                scheduler.step(values["valid/accuracy"])
                running = {"loss": 0.0, "correct": 0.0, "count": 0}
                measure(step)
    torch.save({"weights": {k: v.detach() for k, v in weights.items()}, "task": task.params_dict(),
                "estimator": estimator.label, "step": step}, session.checkpoint_path(step))
