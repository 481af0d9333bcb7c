"""learn-to-sort: a scorer network trained to order random sequences (NeuralSort's sorting experiment, CPU-sized).

Grover et al. (ICLR 2019, §6.1) train a CNN to score large-MNIST numbers (four MNIST
digits side by side) so that sorting the scores sorts the numbers, with a Plackett–Luce
ranking over the scores. Here the digits are synthetic: each number has ``digits``
decimal digits, shown to the scorer as one-hot vectors ``[10·digits]`` rather than images,
so the scorer must still learn place values (ordering numbers that share their leading
digits needs the lower digits' weights). The scorer is a one-hidden-layer tanh network
applied to each number, θ_i = Σ_h v_h tanh(W_h·x_i + b_h) (no output bias: PL is
shift-invariant). The k numbers of a sequence are distinct (drawn without replacement).
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
from gradbench.view import View
from gradbench.errors import SpecError
from gradbench.families.categorical import Objective
from gradbench.families.permutation import PlackettLuce, descending_order, permutation_matrix
from gradbench.noise import NoiseSource
from gradbench.params import param
from gradbench.registry import tasks
from gradbench.training import TrainingSession, TrainingTask

MAX_ITEMS = 7  # the per-sequence reference enumerates k! orderings for every measured sequence


def one_hot_digits(x: Tensor, digits: int, dtype: torch.dtype) -> Tensor:
    """Integers ``[M, k]`` -> their decimal digits, most significant first, one-hot: ``[M, k, 10·digits]``."""
    powers = 10 ** torch.arange(digits - 1, -1, -1, device=x.device)
    return torch.nn.functional.one_hot(x.unsqueeze(-1) // powers % 10, 10).flatten(-2).to(dtype)


def scores(weights: Tensor, features: Tensor, hidden: int) -> Tensor:
    """θ for scorer weights ``[n, F·H + 2H]`` (W, b, v) and features ``[M, k, F]`` -> ``[n, M, k]``."""
    n, width = weights.shape[0], features.shape[-1]
    W = weights[:, : width * hidden].reshape(n, width, hidden)
    b, v = weights[:, width * hidden :].unflatten(-1, (2, hidden)).unbind(-2)  # each [n, H]
    h = torch.tanh(torch.einsum("mkf,nfh->nmkh", features, W) + b[:, None, None])  # [n, M, k, H]
    return (h * v[:, None, None]).sum(-1)


class SortProblem(Problem):
    """E Σ_u ‖P_u − P_u^true‖² over sequences of integers ``x [M, k]``, z_u ~ PL(exp θ_u), θ = scorer(digits of x)."""

    family = "permutation"

    def __init__(self, weights: Tensor, x: Tensor, digits: int, hidden: int):
        self.weights, self.x, self.hidden = weights, x, hidden
        self.features = one_hot_digits(x, digits, weights.dtype)
        self.truth = truth = permutation_matrix(descending_order(x), weights.dtype)  # [M, k, k]
        self.objective = Objective(lambda p: ((p - truth) ** 2).sum((-2, -1)))

    def parameters(self):
        return {"scorer": self.weights}

    def distribution(self, params):
        return PlackettLuce(scores(params["scorer"], self.features, self.hidden), units=1)

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
    digits: int = param(3, "decimal digits per number (numbers 0 to 10^digits − 1)", ge=1, le=6)
    hidden: int = param(32, "hidden tanh units of the scorer", ge=1)
    steps: int = param(300, "training steps", ge=0)
    batch: int = param(32, "sequences per step", ge=1)
    lr: float = param(0.02, "Adam learning rate", gt=0.0)
    log_every: int = param(50, "steps between evaluations on the test sequences", ge=1)
    measure_every: int = param(100, "steps between gradient measurements (0: never)", ge=0)
    test_sequences: int = param(1000, "fixed sequences for the accuracy and exact expected loss", ge=1)
    measure_sequences: int = param(32, "fixed sequences the gradient is measured on", ge=1)

    def __post_init__(self):
        if self.k > 10 ** self.digits:
            raise SpecError(f"learn-to-sort: {self.k} distinct numbers need more than {self.digits} digit(s); "
                            "lower k or raise digits")

    def train(self, estimator, session: TrainingSession) -> None:
        device, dtype = session.device, session.dtype
        data = session.generator("data")

        def numbers(m: int) -> Tensor:
            """``m`` sequences of k distinct integers below 10^digits ``[m, k]``."""
            keys = torch.rand(m, 10**self.digits, generator=data, device=device)
            return keys.topk(self.k, dim=-1).indices

        problem = lambda w, x: SortProblem(w, x, self.digits, self.hidden)  # noqa: E731
        test_x, measure_x = numbers(self.test_sequences), numbers(self.measure_sequences)
        width = 10 * self.digits
        g = session.generator("init")  # PyTorch's default Linear init: U(±1/√fan_in)
        uniform = lambda size, bound: (torch.rand(size, generator=g, device=device, dtype=dtype) * 2 - 1) * bound  # noqa: E731
        weights = torch.cat([uniform(width * self.hidden, 1 / math.sqrt(width)), uniform(self.hidden, 1 / math.sqrt(width)),
                             uniform(self.hidden, 1 / math.sqrt(self.hidden))]).requires_grad_(True)
        optimizer = torch.optim.Adam([weights], lr=self.lr)
        probe = problem(weights.detach(), numbers(self.batch))
        view = View(probe, estimator)
        state = estimator.init(view.template, session.generator("estimator"))
        noise = NoiseSource(session.seed, "train", device, dtype)
        test = problem(weights.detach(), test_x)
        with session.track(f"{estimator.label} · training", self.steps) as bar:
            for step in range(self.steps + 1):
                if step % self.log_every == 0 or step == self.steps:
                    session.log(step, self._evaluate(test, weights.detach()))
                if self.measure_every and (step % self.measure_every == 0 or step == self.steps):
                    session.measure(step, problem(weights.detach(), measure_x), state)
                if step == self.steps:
                    break
                batch = problem(weights, numbers(self.batch))
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
            predicted = descending_order(scores(weights.unsqueeze(0), test.features, test.hidden)[0])  # [M, k]
            truth = descending_order(test.x)
            correct = predicted == truth
            return {"test/expected_loss": float(test.expected_loss(weights).mean()),
                    "test/accuracy_full": float(correct.all(-1).to(weights.dtype).mean()),
                    "test/accuracy_position": float(correct.to(weights.dtype).mean())}
