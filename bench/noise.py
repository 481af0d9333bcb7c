"""Explicit, seeded noise shared between estimators (common random numbers).

Noise is drawn in fixed blocks of estimates. A block's values depend only on
(seed, phase, noise name, kind, per-estimate shape, block index), never on the chunk
size, the engine or which other estimators run. So two estimators that ask for
the same noise (say, the Gumbel vector of one exact sample) see identical draws,
the loop engine sees exactly the vectorised engine's noise, and adding an
estimator to a run changes nobody else's numbers.

Generators are per device, on purpose: a block is drawn on the run's device by that
device's own generator (on CUDA, PyTorch's Philox generator), never drawn on the CPU
and copied. CUDA runs are therefore reproducible on CUDA, but their draws differ from
a CPU run with the same seed: compare CPU and CUDA statistically (docs/gpu.md).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import torch
from torch import Tensor

KINDS = ("uniform", "gumbel", "exponential", "normal")
_BLOCK_VALUES = 1 << 18  # values per block: big enough to amortise generator set-up


@dataclass(frozen=True)
class NoiseSpec:
    """Noise for one estimate: a kind (see KINDS) and a per-estimate shape."""

    kind: str
    shape: tuple[int, ...]

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown noise kind {self.kind!r}; expected one of {KINDS}")

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def derive_seed(*key) -> int:
    """A 63-bit seed from any printable key, stable across processes and platforms."""
    digest = hashlib.blake2b(repr(key).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class NoiseSource:
    """Draws noise for estimates ``[start, stop)`` of one phase of one run.

    phase separates independent streams of the same run ("measure", "warmup",
    "reference", "train:epoch3", ...).
    """

    def __init__(self, seed: int, phase: str, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float64):
        self.seed = seed
        self.phase = phase
        self.device = torch.device(device)
        self.dtype = dtype
        self._cache: dict[tuple, tuple[int, Tensor]] = {}

    def block_size(self, spec: NoiseSpec) -> int:
        return max(1, _BLOCK_VALUES // max(1, spec.numel))

    def draw(self, name: str, spec: NoiseSpec, start: int, stop: int) -> Tensor:
        """Noise ``[stop - start, *spec.shape]`` for estimates start..stop-1."""
        size = self.block_size(spec)
        first, last = start // size, (stop - 1) // size
        blocks = [self._block(name, spec, b, size) for b in range(first, last + 1)]
        joined = blocks[0] if len(blocks) == 1 else torch.cat(blocks)
        offset = start - first * size
        return joined[offset : offset + stop - start]

    def draw_all(self, specs: dict[str, NoiseSpec], start: int, stop: int) -> dict[str, Tensor]:
        return {name: self.draw(name, spec, start, stop) for name, spec in specs.items()}

    def _block(self, name: str, spec: NoiseSpec, index: int, size: int) -> Tensor:
        key = (name, spec.kind, spec.shape)
        cached = self._cache.get(key)
        if cached is not None and cached[0] == index:
            return cached[1]
        generator = torch.Generator(self.device)
        generator.manual_seed(derive_seed(self.seed, self.phase, name, spec.kind, spec.shape, index))
        block = _generate(spec.kind, (size, *spec.shape), generator, self.device, self.dtype)
        self._cache[key] = (index, block)
        return block


def _generate(kind: str, shape: tuple, generator: torch.Generator, device, dtype) -> Tensor:
    if kind == "normal":
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)
    u = torch.rand(shape, generator=generator, device=device, dtype=dtype)
    if kind == "uniform":
        return u
    # Exp(1) = −log U and Gumbel(0, 1) = −log Exp(1); two logs of a uniform are about twice
    # as fast as exponential_ on the CPU. U = 0 is representable, so keep it off zero.
    e = u.clamp_(min=torch.finfo(dtype).tiny).log_().neg_()
    if kind == "exponential":
        return e
    return e.log_().neg_()
