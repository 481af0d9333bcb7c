"""Training checkpoints: written atomically, read back with their architecture checked.

A checkpoint holds the model and optimiser state, the epoch and global step, the
estimator's label and state, and the task parameters that fix the architecture.
Files are loaded with ``torch.load(weights_only=True)``: tensors and plain containers
only, never arbitrary pickled code (an estimator state must be made of those).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from gradbench.errors import DataError
from gradbench.params import plain

FORMAT = 1
ARCHITECTURE = ("latent", "latents", "categories", "encoder_hidden", "decoder_hidden", "activation")


def save(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` via a temporary file and a rename (never half a file)."""
    fd, tmp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(dict(payload, format=FORMAT), fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: str | os.PathLike, architecture: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read a checkpoint; with ``architecture``, check that it matches the checkpoint's.

    Raises DataError naming the file for a missing, unreadable or foreign file, or a
    model of another shape.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"checkpoint {path} does not exist; give resume= the path of a .pt file that a run "
                        "with checkpoint_every=N saved (in <run folder>/_checkpoints/)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise DataError(f"checkpoint {path} cannot be read ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
                        "expected a gradbench mnist-vae checkpoint") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT or "model" not in payload:
        raise DataError(f"checkpoint {path} is not a gradbench mnist-vae checkpoint (format {FORMAT})")
    if architecture is not None:
        saved = payload.get("architecture", {})
        for key in ARCHITECTURE:
            want, have = plain(architecture.get(key)), plain(saved.get(key))
            if want != have:
                raise DataError(f"checkpoint {path} has {key}={have!r} but the task has {key}={want!r}; "
                                f"set {key}={have!r} in the task spec to load it")
    return payload
