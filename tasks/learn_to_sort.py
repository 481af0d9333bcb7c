"""learn-to-sort: a scorer network trained to order random sequences (NeuralSort's sorting experiment, CPU-sized).

Grover et al. (ICLR 2019, §6.1) train a CNN to score MNIST numbers so that sorting the
scores sorts the numbers, with a Plackett–Luce ranking over the scores. Here the numbers
are synthetic, x ~ U(0, 1), and the scorer is a one-hidden-layer tanh network applied to
each number, θ_i = Σ_h v_h tanh(w_h x_i + b_h) (no output bias: PL is shift-invariant).
Each training step draws ``batch`` sequences of k numbers; z ~ PL(exp θ) per sequence, and
f(P) = ‖P − P_true‖² per sequence (the toy-permutation quadratic against the true
descending order), summed over sequences (units). Adam on the scorer's weights.

Logged every ``log_every`` steps on ``test_sequences`` fixed sequences: the exact expected
loss E f (enumerating the k! orderings per sequence), the accuracy of the full ordering
(argsort of θ equals the true order) and per position. Gradients are measured every
``measure_every`` steps with respect to the scorer's weights (group ``scorer``) on
``measure_sequences`` fixed sequences, against the exact gradient: the sequences are
independent, so it is autograd of Σ_u Σ_z p(z | θ_u) f_u(z), k! terms per sequence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from gradbench.contract import Problem
from gradbench.engine import View
from gradbench.families.categorical import Objective
from gradbench.families.permutation import PlackettLuce, descending_order, permutation_matrix
from gradbench.noise import NoiseSource
from gradbench.params import param
from gradbench.registry import tasks
from gradbench.training import TrainingSession, TrainingTask

MAX_ITEMS = 7  # the per-sequence reference enumerates k! orderings for every measured sequence


def scores(weights: Tensor, x: Tensor) -> Tensor:
    """θ for scorer weights ``[n, 3H]`` (w, b, v) and numbers ``[M, k]`` -> ``[n, M, k]``."""
    w, b, v = weights.unflatten(-1, (3, -1)).unbind(-2)  # each [n, H]
    hidden = torch.tanh(x.unsqueeze(-1).unsqueeze(0) * w[:, None, None] + b[:, None, None])  # [n, M, k, H]
    return (hidden * v[:, None, None]).sum(-1)


class SortProblem(Problem):
    """E Σ_u ‖P_u − P_u^true‖² over sequences ``x [M, k]``, z_u ~ PL(exp θ_u), θ = scorer(x); group ``scorer``."""

    family = "permutation"

    def __init__(self, weights: Tensor, x: Tensor):
        self.weights, self.x = weights, x
        self.truth = truth = permutation_matrix(descending_order(x), x.dtype)  # [M, k, k]
        self.objective = Objective(lambda p: ((p - truth) ** 2).sum((-2, -1)))

    def parameters(self):
        return {"scorer": self.weights}

    def distribution(self, params):
        return PlackettLuce(scores(params["scorer"], self.x), units=1)

    def expected_loss(self, weights: Tensor) -> Tensor:
        """Exact E f per sequence ``[M]`` by enumerating the k! orderings of each (differentiable in weights)."""
        dist = self.distribution({"scorer": weights.unsqueeze(0)})
        support = dist.support()  # [k!, k, k]
        log_p = dist.log_prob(support[:, None, None])  # [k!, 1, M]
        f = ((support[:, None] - self.truth) ** 2).sum((-2, -1))  # [k!, M]
        return (log_p[:, 0].exp() * f).sum(0)

    def exact_gradient(self):
        weights = self.weights.detach().clone().requires_grad_(True)
        return {"scorer": torch.autograd.grad(self.expected_loss(weights).sum(), weights)[0]}


@tasks.register
@dataclass(frozen=True)
class LearnToSort(TrainingTask):
    """Train a scorer network to sort random numbers with a PL ranking (NeuralSort's experiment); exact gradients."""

    name = "learn-to-sort"
    families = ("permutation",)
    exact = True
    groups = ("scorer",)
    default_samples = 1000
    k: int = param(5, f"numbers per sequence (2 to {MAX_ITEMS})", ge=2, le=MAX_ITEMS)
    hidden: int = param(16, "hidden tanh units of the scorer", ge=1)
    steps: int = param(300, "training steps", ge=0)
    batch: int = param(32, "sequences per step", ge=1)
    lr: float = param(0.02, "Adam learning rate", gt=0.0)
    log_every: int = param(50, "steps between evaluations on the test sequences", ge=1)
    measure_every: int = param(100, "steps between gradient measurements (0: never)", ge=0)
    test_sequences: int = param(1000, "fixed sequences for the accuracy and exact expected loss", ge=1)
    measure_sequences: int = param(32, "fixed sequences the gradient is measured on", ge=1)

    def train(self, estimator, session: TrainingSession) -> None:
        device, dtype = session.device, session.dtype
        data = session.generator("data")
        numbers = lambda m: torch.rand(m, self.k, generator=data, device=device, dtype=dtype)  # noqa: E731
        test_x, measure_x = numbers(self.test_sequences), numbers(self.measure_sequences)
        bound = 1 / math.sqrt(self.hidden)  # w, b ~ U(−1, 1) (fan-in 1), v ~ U(−1/√H, 1/√H)
        init = torch.rand(3, self.hidden, generator=session.generator("init"), device=device, dtype=dtype) * 2 - 1
        weights = (init * torch.tensor([1.0, 1.0, bound], device=device, dtype=dtype)[:, None]).reshape(-1)
        weights.requires_grad_(True)
        optimizer = torch.optim.Adam([weights], lr=self.lr)
        probe = SortProblem(weights.detach(), numbers(self.batch))
        view = View(probe, estimator)
        state = estimator.init(view.template, session.generator("estimator"))
        noise = NoiseSource(session.seed, "train", device, dtype)
        test = SortProblem(weights.detach(), test_x)
        with session.track(f"{estimator.label} · training", self.steps) as bar:
            for step in range(self.steps + 1):
                if step % self.log_every == 0 or step == self.steps:
                    session.log(step, self._evaluate(test, weights.detach()))
                if self.measure_every and (step % self.measure_every == 0 or step == self.steps):
                    session.measure(step, SortProblem(weights.detach(), measure_x), state)
                if step == self.steps:
                    break
                batch = SortProblem(weights, numbers(self.batch))
                dist = batch.distribution({"scorer": weights.unsqueeze(0)})
                draws = noise.draw_all(estimator.noise(view.template), step, step + 1)
                out = estimator.surrogate(dist, batch.objective, draws, state)
                optimizer.zero_grad(set_to_none=True)
                (out.value.sum() / self.batch).backward()
                optimizer.step()
                state = estimator.update(state, dist, batch.objective, draws, out)
                if bar:
                    bar(1)

    def _evaluate(self, test: SortProblem, weights: Tensor) -> dict[str, float]:
        with torch.no_grad():
            predicted = descending_order(scores(weights.unsqueeze(0), test.x)[0])  # [M, k]
            truth = descending_order(test.x)
            correct = predicted == truth
            return {"test/expected_loss": float(test.expected_loss(weights).mean()),
                    "test/accuracy_full": float(correct.all(-1).to(weights.dtype).mean()),
                    "test/accuracy_position": float(correct.to(weights.dtype).mean())}
