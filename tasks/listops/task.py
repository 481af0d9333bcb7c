"""The ``listops`` training task: latent tree learning, an estimator choosing every merge.

A Gumbel Tree-LSTM (tasks/listops/model.py) reads a ListOps expression's tokens,
builds a binary tree by repeatedly merging the adjacent pair its scorer picks, and
classifies the root into the expression's value. Training applies the estimator to
the merge choices; evaluation merges by argmax. Gradients of the merge scorer
(``query``) and of the whole model (``model``) are measured at frozen checkpoints
against an exact reference over every merge order of short sentences.

Presets: ``cpu`` (the default) fits a few CPU minutes; ``gst-paper`` is the GST
paper's setup (dimensions 300, batch 16, 20 epochs, dropout 0.5, Adam 1e-3,
ReduceLROnPlateau(0.5, patience 4), gradient clip 5, sentences under 100 tokens).
Any parameter given explicitly overrides its preset value.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from gradbench.errors import DataError
from gradbench.params import param
from gradbench.registry import tasks
from gradbench.training import TrainingTask

PRESETS = {
    "cpu": dict(dim=32, batch_size=32, epochs=2, lr=2e-3, dropout=0.0, train_size=12_000, test_size=1000,
                checkpoints=4),
    "gst-paper": dict(dim=300, batch_size=16, epochs=20, lr=1e-3, dropout=0.5, train_size=90_000, test_size=10_000,
                      checkpoints=20),
}
SPLIT_FILES = {"train": ("train.tsv", "train_d20s.tsv"), "valid": ("valid.tsv", "dev.tsv", "dev_d20s.tsv"),
               "test": ("test.tsv", "test_d20s.tsv")}


@tasks.register
@dataclass(frozen=True)
class ListOps(TrainingTask):
    """ListOps with a Gumbel Tree-LSTM: the estimator chooses which adjacent nodes to merge (GST paper, task 2)."""

    name = "listops"
    families = ("categorical-sequence", "categorical")
    masks = True
    exact = True
    groups = ("query", "model")
    dtype: ClassVar[str] = "float32"
    data_commands: ClassVar[dict[str, str]] = {"listops": "gradbench.tasks.listops.cli:data_listops"}

    preset: str = param("cpu", "cpu (a few CPU minutes) or gst-paper (the published setup)",
                        choices=("cpu", "gst-paper"))
    dim: int | None = param(None, "embedding, leaf-LSTM, Tree-LSTM and MLP dimension (cpu 32, gst-paper 300)",
                            kind="int", optional=True, ge=1)
    batch_size: int | None = param(None, "sentences per training batch (cpu 32, gst-paper 16)", kind="int",
                                   optional=True, ge=1)
    epochs: int | None = param(None, "passes over the training set (cpu 2, gst-paper 20)", kind="int",
                               optional=True, ge=1)
    lr: float | None = param(None, "Adam learning rate, halved after 4 checkpoints without a better "
                                   "validation accuracy (cpu 2e-3, gst-paper 1e-3)", kind="float", optional=True, gt=0)
    dropout: float | None = param(None, "dropout on embeddings and the classifier (cpu 0, gst-paper 0.5)",
                                  kind="float", optional=True, ge=0, lt=1)
    clip: float = param(5.0, "gradient-norm clip", gt=0)
    train_size: int | None = param(None, "generated training sentences (cpu 12000, gst-paper 90000)", kind="int",
                                   optional=True, ge=1)
    valid_size: int = param(0, "generated validation sentences (disjoint) to use instead of the official "
                               "validation file; 0 keeps the official file", ge=0)
    test_size: int | None = param(None, "generated test sentences, disjoint from training (cpu 1000, "
                                        "gst-paper 10000)", kind="int", optional=True, ge=0)
    max_length: int = param(99, "longest training sentence in tokens (GST: under 100)", ge=4)
    data_seed: int = param(0, "seed of the generated sentences (the run's --seed sets weights and noise)", ge=0)
    data_dir: str | None = param(None, "folder with official-format train.tsv (or train_d20s.tsv) and optional "
                                       "valid.tsv and test.tsv; default: generated data", kind="str", optional=True)
    checkpoints: int | None = param(None, "evaluations, evenly spaced, the last at the end (cpu 4, gst-paper 20)",
                                    kind="int", optional=True, ge=1)
    measure: str = param("ends", "gradient measurements: at the start and end (ends), also at every "
                                 "checkpoint (all), or none", choices=("ends", "all", "none"))
    measure_sentences: int = param(8, "validation sentences in the measurement batch", ge=1)
    measure_length: int = param(7, "their longest length in tokens: ≤ 7 keeps every sentence's (ℓ − 1)! "
                                   "merge orders enumerable for an exact reference", ge=2)

    def __post_init__(self):
        for key, value in PRESETS[self.preset].items():
            if getattr(self, key) is None:
                object.__setattr__(self, key, value)
        if self.data_dir is not None:
            folder = Path(self.data_dir)
            if not folder.is_dir():
                raise DataError(f"listops: data_dir {self.data_dir!r} is not a folder; give the folder holding "
                                "train.tsv (and optionally valid.tsv, test.tsv)")
            if self.split_file("train") is None:
                raise DataError(f"listops: no train.tsv or train_d20s.tsv in {self.data_dir!r}; add one or drop "
                                "data_dir to generate data")

    def split_file(self, split: str) -> Path | None:
        """The data_dir file of one split, if present."""
        for name in SPLIT_FILES[split]:
            path = Path(self.data_dir) / name
            if path.is_file():
                return path
        return None

    def splits(self):
        """Training, validation and test examples (official validation file unless data_dir has one)."""
        from . import data
        from .training import Splits

        official = data.read_tsv(data.official_validation_path())
        if self.data_dir is None:
            sizes = (self.train_size, self.valid_size, self.test_size)
            examples = data.generate(sum(sizes), self.data_seed, max_length=self.max_length)  # unique: disjoint splits
            train, valid, test = (examples[sum(sizes[:i]) : sum(sizes[: i + 1])] for i in range(3))
            return Splits(train, valid or official, test, f"generated, data_seed={self.data_seed}")
        train = [e for e in data.read_tsv(self.split_file("train")) if len(e.tokens) <= self.max_length]
        if not train:
            raise DataError(f"listops: no training sentence in {self.split_file('train')} has at most "
                            f"{self.max_length} tokens; raise max_length")
        valid, test = self.split_file("valid"), self.split_file("test")
        return Splits(train, data.read_tsv(valid) if valid else official, data.read_tsv(test) if test else [],
                      f"{self.split_file('train')}, sentences of at most {self.max_length} tokens")

    def train(self, estimator, session) -> None:
        from .training import train

        train(self, estimator, session, self.splits())
