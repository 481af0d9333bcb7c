"""Gumbel Tree-LSTM (Choi, Yoo & Lee, AAAI 2018) with a leaf LSTM, for parameter copies.

Tokens (parentheses stripped) are the leaves. A leaf LSTM gives each leaf a state
(h, c); then, while more than one node is left, every adjacent pair is composed by
a binary Tree-LSTM cell, each candidate parent is scored q·h/√d, and one pair is
merged: the chosen parent replaces its two children. The root's h goes through a
one-hidden-layer MLP to 10 classes; f is the cross-entropy of the label.

Every weight has a leading copy axis ``[n, ...]`` so that n independent copies run
at once (one gradient estimate per copy); activations are ``[*lead, n, B, ...]``
with ``lead`` extra sample axes. Training uses n = 1.

The merge decisions form a :class:`~gradbench.families.sequence.DecisionProcess`: with L
the longest sentence of a batch, T = L − 1 decisions over K = L − 1 positions; at
step t a sentence of ℓ leaves has ℓ − 1 − t valid positions (the nodes stay
left-aligned), and once it is a single node it keeps one valid position that
changes nothing (probability 1, no gradient). Its ℓ − 1 merges can be made in
(ℓ − 1)! orders.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from gradbench.families.sequence import CategoricalSequence, DecisionProcess

from . import data

PAD = len(data.VOCAB)  # padding token id (an embedding row of its own, never read by a valid node)
CLASSES = 10

# Weight names and shapes for dimension d (embedding dimension = d, MLP hidden = d).
def weight_shapes(dim: int) -> dict[str, tuple[int, ...]]:
    d = dim
    return {
        "embedding": (PAD + 1, d),
        "leaf_ih": (d, 4 * d),
        "leaf_hh": (d, 4 * d),
        "leaf_bias": (4 * d,),
        "compose_weight": (2 * d, 5 * d),
        "compose_bias": (5 * d,),
        "query": (d,),
        "mlp_weight": (d, d),
        "mlp_bias": (d,),
        "out_weight": (d, CLASSES),
        "out_bias": (CLASSES,),
    }


def init_weights(dim: int, generator: torch.Generator, dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu", query_std: float = 0.01) -> dict[str, Tensor]:
    """Fresh weights (no copy axis), initialised as Choi et al.: orthogonal recurrent and
    composition weights, Kaiming input weights, zero biases, a small query."""
    init = torch.nn.init
    w = {k: torch.empty(s, dtype=dtype, device=device) for k, s in weight_shapes(dim).items()}
    init.normal_(w["embedding"], 0.0, 1.0 / math.sqrt(dim), generator=generator)
    init.kaiming_normal_(w["leaf_ih"].T, generator=generator)
    for block in w["leaf_hh"].split(dim, dim=1):
        block.copy_(init.orthogonal_(torch.empty_like(block), generator=generator))
    init.orthogonal_(w["compose_weight"], generator=generator)
    init.normal_(w["query"], 0.0, query_std, generator=generator)
    init.kaiming_normal_(w["mlp_weight"].T, nonlinearity="relu", generator=generator)
    init.kaiming_normal_(w["out_weight"].T, nonlinearity="linear", generator=generator)
    for name in ("leaf_bias", "compose_bias", "mlp_bias", "out_bias"):
        w[name].zero_()
    return w


@dataclass
class Batch:
    """Sentences as padded token ids ``[B, L]``, their lengths ``[B]`` and labels ``[B]``."""

    tokens: Tensor
    lengths: Tensor
    labels: Tensor

    @classmethod
    def of(cls, examples, device: torch.device | str = "cpu") -> Batch:
        ids = [data.token_ids(e.tokens) for e in examples]
        longest = max(len(i) for i in ids)
        # Padded on the CPU from Python lists, then moved in one copy per tensor.
        tokens = torch.full((len(ids), longest), PAD, dtype=torch.long, device="cpu")
        for row, i in enumerate(ids):
            tokens[row, : len(i)] = torch.tensor(i, device="cpu")
        lengths = torch.tensor([len(i) for i in ids], device="cpu")
        labels = torch.tensor([e.label for e in examples], device="cpu")
        return cls(tokens.to(device), lengths.to(device), labels.to(device))

    def __len__(self) -> int:
        return self.tokens.shape[0]


def _linear(x: Tensor, weight: Tensor, bias: Tensor, inner: int) -> Tensor:
    """x ``[*lead, n, *mid, i]`` (``inner`` = len(mid)) times weight ``[n, i, o]`` plus bias ``[n, o]``.

    One bmm per copy over every lead and mid row: broadcasting the weight over lead
    axes instead would run one small matmul per sample (RLOO's m trees, enumerated orders).
    """
    n, lead = weight.shape[0], x.dim() - 2 - inner
    rows = x.movedim(lead, 0) if lead else x
    out = torch.bmm(rows.reshape(n, -1, x.shape[-1]), weight).reshape(*rows.shape[:-1], weight.shape[-1])
    out = out.movedim(0, lead) if lead else out
    return out + bias.reshape(n, *([1] * inner), bias.shape[-1])


def leaf_states(w: dict[str, Tensor], batch: Batch, drop: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Leaf LSTM over the tokens: (h, c), each ``[n, B, L, d]``. drop: embedding dropout mask."""
    emb = w["embedding"][:, batch.tokens]  # [n, B, L, d]
    if drop is not None:
        emb = emb * drop
    inputs = _linear(emb, w["leaf_ih"], w["leaf_bias"], inner=2)  # [n, B, L, 4d]
    n, size, steps, _ = emb.shape
    d = w["leaf_hh"].shape[1]
    h = c = emb.new_zeros(n, size, d)
    hs, cs = [], []
    for i in range(steps):
        gates = inputs[:, :, i] + torch.bmm(h, w["leaf_hh"])
        gi, gf, gg, go = gates.chunk(4, dim=-1)
        c = torch.sigmoid(gf) * c + torch.sigmoid(gi) * torch.tanh(gg)
        h = torch.sigmoid(go) * torch.tanh(c)
        hs.append(h)
        cs.append(c)
    return torch.stack(hs, dim=2), torch.stack(cs, dim=2)


def compose(w: dict[str, Tensor], h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """Tree-LSTM parents of every adjacent pair: ``[*lead, n, B, m, d] -> [*lead, n, B, m − 1, d]``."""
    return compose_pairs(w, h[..., :-1, :], c[..., :-1, :], h[..., 1:, :], c[..., 1:, :])


def compose_pairs(w: dict[str, Tensor], hl: Tensor, cl: Tensor, hr: Tensor, cr: Tensor) -> tuple[Tensor, Tensor]:
    """Binary Tree-LSTM cell on children states ``[*lead, n, B, m, d]`` each; returns the parents' (h, c)."""
    gates = _linear(torch.cat([hl, hr], dim=-1), w["compose_weight"], w["compose_bias"], inner=2)
    gi, gl, gr, gu, go = gates.chunk(5, dim=-1)
    # Forget gates biased by +1 (Choi et al.) so children's cells pass through early in training.
    cell = cl * torch.sigmoid(gl + 1) + cr * torch.sigmoid(gr + 1) + torch.tanh(gu) * torch.sigmoid(gi)
    return torch.sigmoid(go) * torch.tanh(cell), cell


def merge(h: Tensor, parents: Tensor, x: Tensor) -> Tensor:
    """Replace the pair chosen by ``x [.., m − 1]`` (one-hot or relaxed) by its parent: ``[.., m, d] -> [.., m − 1, d]``.

    Left of the choice nodes stay, right of it they shift one place left.
    """
    upto = x.cumsum(-1)
    left, right = (1 - upto).unsqueeze(-1), (upto - x).unsqueeze(-1)
    return x.unsqueeze(-1) * parents + left * h[..., :-1, :] + right * h[..., 1:, :]


def classify(w: dict[str, Tensor], root: Tensor, drop: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """Class logits ``[*lead, n, B, 10]`` from root states ``[*lead, n, B, d]``; drop: masks of the MLP's two inputs."""
    if drop is not None:
        root = root * drop[0]
    hidden = torch.relu(_linear(root, w["mlp_weight"], w["mlp_bias"], inner=1))
    if drop is not None:
        hidden = hidden * drop[1]
    return _linear(hidden, w["out_weight"], w["out_bias"], inner=1)


def merge_mask(lengths: Tensor) -> Tensor:
    """Valid merge positions ``[B, T, K]`` (T = K = L − 1): k < max(ℓ − 1 − t, 1)."""
    steps = max(int(lengths.max()) - 1, 0)
    t = torch.arange(steps, device=lengths.device)
    valid = (lengths[:, None] - 1 - t[None, :]).clamp(min=1)  # [B, T]
    return torch.arange(steps, device=lengths.device)[None, None, :] < valid[:, :, None]


class MergeProcess(DecisionProcess):
    """The merge decisions of one batch for weight copies ``{name: [n, *shape]}``; f = cross-entropy per sentence.

    drop: optional dropout masks, already scaled: ``{"embedding": [n, B, L, d], "mlp": ([n, B, d], [n, B, d])}``.
    """

    units = 1

    def __init__(self, w: dict[str, Tensor], batch: Batch, drop: dict[str, Tensor] | None = None):
        self.w, self.batch, self.drop = w, batch, drop or {}
        self.n = w["query"].shape[0]
        self.batch_shape = (len(batch),)
        self.mask = merge_mask(batch.lengths)
        self.done = torch.arange(self.mask.shape[1], device=batch.lengths.device)[None, :] >= batch.lengths[:, None] - 1
        self.scale = math.sqrt(w["query"].shape[-1])
        self.predictions: Tensor | None = None  # argmax classes of the last finished run, [*lead, n, B]
        self._leaves: dict[bool, tuple[Tensor, Tensor]] = {}

    def start(self, lead: tuple[int, ...] = ()):
        # The leaves depend on no decision: computed once per grad mode and shared by every run
        # (a no-grad sampling pass must not hand graph-less leaves to a later differentiated one).
        key = torch.is_grad_enabled()
        if key not in self._leaves:
            self._leaves[key] = leaf_states(self.w, self.batch, self.drop.get("embedding"))
        h, c = self._leaves[key]
        return h.expand(*lead, *h.shape), c.expand(*lead, *c.shape)

    def propose(self, carry, t: int) -> tuple[Tensor, Callable]:
        h, c = carry
        parents_h, parents_c = compose(self.w, h, c)
        q = self.w["query"].reshape(self.n, 1, 1, -1)
        scores = (parents_h * q).sum(-1) / self.scale  # [*lead, n, B, m − 1]
        logits = torch.nn.functional.pad(scores, (0, self.mask.shape[-1] - scores.shape[-1]))
        done = self.done[:, t, None, None]

        def advance(x: Tensor):
            x = x[..., : scores.shape[-1]]
            new_h, new_c = merge(h, parents_h, x), merge(c, parents_c, x)
            # A finished sentence keeps its root in place whatever was "chosen".
            return torch.where(done, h[..., :-1, :], new_h), torch.where(done, c[..., :-1, :], new_c)

        return logits, advance

    def logits(self, carry) -> Tensor:
        return classify(self.w, carry[0][..., 0, :], self.drop.get("mlp"))

    def finish(self, carry) -> Tensor:
        logits = self.logits(carry)
        self.predictions = logits.detach().argmax(-1)
        log_p = torch.log_softmax(logits, dim=-1)
        labels = self.batch.labels.expand(log_p.shape[:-1]).unsqueeze(-1)
        return -log_p.gather(-1, labels).squeeze(-1)

    def greedy(self) -> Tensor:
        """Class logits ``[n, B, 10]`` of the trees built by argmax merges (evaluation, no lead axes).

        After a merge at k only the candidate parents at k − 1 and k are new; the
        others are the previous step's, shifted. Recomputing just those two makes a
        sentence of ℓ leaves cost O(ℓ·d²) instead of O(ℓ²·d²), which matters for the
        official validation set's 900-token sentences. Same trees as ``propose``
        with argmax choices (tested).
        """
        h, c = self.start()
        if self.mask.shape[1] == 0:
            return self.logits((h, c))
        parents_h, parents_c = compose(self.w, h, c)
        q = self.w["query"].reshape(self.n, 1, 1, -1)
        for t in range(self.mask.shape[1]):
            m = h.shape[-2]  # nodes left (padded); m − 1 candidates
            scores = ((parents_h * q).sum(-1) / self.scale).masked_fill(~self.mask[:, t, : m - 1], float("-inf"))
            k = scores.argmax(-1)  # [n, B]
            x = torch.nn.functional.one_hot(k, m - 1).to(h.dtype)
            done = self.done[:, t, None, None]
            h = torch.where(done, h[..., :-1, :], merge(h, parents_h, x))
            c = torch.where(done, c[..., :-1, :], merge(c, parents_c, x))
            if m == 2:
                break
            # Candidates j < k keep theirs, j ≥ k take j + 1's; then recompute j = k − 1 and k.
            j = torch.arange(m - 2, device=k.device)
            shift = (j + (j >= k[..., None])).unsqueeze(-1).expand(*k.shape, m - 2, h.shape[-1])
            parents_h, parents_c = parents_h.gather(-2, shift), parents_c.gather(-2, shift)
            # Clamping makes k = 0 or k = m − 2 recompute one position twice, with the right value.
            at = torch.stack([k - 1, k], dim=-1).clamp(0, m - 3)  # [n, B, 2]
            pick = lambda v, off: v.gather(-2, (at + off).unsqueeze(-1).expand(*at.shape, v.shape[-1]))  # noqa: E731
            new_h, new_c = compose_pairs(self.w, pick(h, 0), pick(c, 0), pick(h, 1), pick(c, 1))
            index = at.unsqueeze(-1).expand(*at.shape, h.shape[-1])
            parents_h, parents_c = parents_h.scatter(-2, index, new_h), parents_c.scatter(-2, index, new_c)
        return self.logits((h, c))


def sequence(w: dict[str, Tensor], batch: Batch, drop: dict[str, Tensor] | None = None) -> CategoricalSequence:
    """The merge decisions of ``batch`` as a distribution (weights with a copy axis)."""
    return CategoricalSequence(MergeProcess(w, batch, drop), w["query"])
