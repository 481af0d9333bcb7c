"""Tests for gradbench.tasks.mnist_vae.data (embedded subset, IDX reader, binarisation)."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from gradbench.errors import DataError, UserError
from gradbench.tasks.mnist_vae import data as D


@pytest.fixture
def fresh_cache():
    """Clear the in-process caches before and after a test that needs a real load."""
    D._load_embedded.cache_clear()
    D._load_idx_set.cache_clear()
    yield
    D._load_embedded.cache_clear()
    D._load_idx_set.cache_clear()


# --------------------------------------------------------------------------
# Embedded subset
# --------------------------------------------------------------------------

def test_embedded_file_is_mlxtends_file_unchanged():
    raw = D.EMBEDDED_PATH.read_bytes()
    assert len(raw) == 1106785
    assert hashlib.sha256(raw).hexdigest() == D.EMBEDDED_SHA256


def test_embedded_subset_loads(fresh_cache):
    t0 = time.perf_counter()
    d = D.load()
    t1 = time.perf_counter()
    D.load()
    t2 = time.perf_counter()
    print(f"\nembedded subset: first load {t1 - t0:.3f} s, cached {1e6 * (t2 - t1):.1f} us")

    assert d.name == "mnist-5k-subset" and d.is_embedded_subset and D.is_embedded_subset(d)
    assert d.train_images.shape == (4000, 784) and d.test_images.shape == (1000, 784)
    assert d.train_labels.shape == (4000,) and d.test_labels.shape == (1000,)
    for a in (d.train_images, d.train_labels, d.test_images, d.test_labels):
        assert a.dtype == np.uint8
        assert not a.flags.writeable  # cached and shared: must not be mutated in place
    assert d.train_images.min() == 0 and d.train_images.max() == 255
    assert d.test_images.min() == 0 and d.test_images.max() == 255
    # Stratified split: exactly 400 / 100 images of every digit.
    assert np.bincount(d.train_labels, minlength=10).tolist() == [400] * 10
    assert np.bincount(d.test_labels, minlength=10).tolist() == [100] * 10
    # The file is sorted by label; the split order must not be.
    assert len(set(d.train_labels[:100].tolist())) == 10


def test_embedded_split_is_deterministic_and_pinned(fresh_cache):
    a = D.load()
    D._load_embedded.cache_clear()
    b = D.load()
    assert a is not b
    np.testing.assert_array_equal(a.train_images, b.train_images)
    np.testing.assert_array_equal(a.test_images, b.test_images)
    np.testing.assert_array_equal(a.test_labels, b.test_labels)

    labels = np.repeat(np.arange(10), 500)  # the file's label column (500 per digit, sorted)
    train_idx, test_idx = D.embedded_split_indices(labels)
    assert len(train_idx) == 4000 and len(test_idx) == 1000
    assert np.intersect1d(train_idx, test_idx).size == 0
    assert np.union1d(train_idx, test_idx).tolist() == list(range(5000))
    # Pinned: fails if numpy's random stream (or the procedure) ever changes the split.
    assert D._split_digest(train_idx, test_idx) == D.EMBEDDED_SPLIT_SHA256
    np.testing.assert_array_equal(a.test_labels, labels[test_idx])


def test_embedded_sha256_mismatch_raises(fresh_cache, tmp_path, monkeypatch):
    bad = tmp_path / "mnist_5k.csv.gz"
    raw = bytearray(D.EMBEDDED_PATH.read_bytes())
    raw[-20] ^= 0xFF
    bad.write_bytes(bytes(raw))
    monkeypatch.setattr(D, "EMBEDDED_PATH", bad)
    with pytest.raises(DataError, match="sha256") as e:
        D.load()
    assert str(bad) in str(e.value) and "\n" not in str(e.value)


def test_unknown_dataset():
    with pytest.raises(UserError, match="fashion-mnist"):
        D.load("cifar10")


# --------------------------------------------------------------------------
# IDX reader and folder layouts
# --------------------------------------------------------------------------

def idx_bytes(a: np.ndarray, type_code: int = 0x08) -> bytes:
    header = bytes([0, 0, type_code, a.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in a.shape)
    return header + a.astype(np.uint8).tobytes()


def write(path: Path, payload: bytes, gz: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload, compresslevel=1))
    else:
        path.write_bytes(payload)
    return path


def make_set(folder: Path, gz: bool, n_train=12, n_test=5, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    paths = {k: write(folder / D.IDX_FILES[k], idx_bytes(a), gz) for k, a in arrays.items()}
    return arrays, paths


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_read_idx_round_trip(tmp_path, gz):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    p = write(tmp_path / "x-idx3-ubyte", idx_bytes(a), gz)
    out = D.read_idx(p, expect_ndim=3)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, a)


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("layout", ["torchvision", "flat"])
def test_load_idx_layouts(tmp_path, fresh_cache, gz, layout):
    folder = tmp_path / "MNIST" / "raw" if layout == "torchvision" else tmp_path
    arrays, paths = make_set(folder, gz)
    assert D.find_idx_files(tmp_path) == paths
    d = D.load(data_dir=tmp_path)
    assert d.name == "mnist" and not d.is_embedded_subset
    assert d.source == str(folder)
    np.testing.assert_array_equal(d.train_images, arrays["train_images"].reshape(-1, 784))
    np.testing.assert_array_equal(d.train_labels, arrays["train_labels"])
    np.testing.assert_array_equal(d.test_images, arrays["test_images"].reshape(-1, 784))
    np.testing.assert_array_equal(d.test_labels, arrays["test_labels"])
    assert d.train_images.dtype == np.uint8 and d.train_images.shape == (12, 784)


def test_load_idx_cache_sees_replaced_files(tmp_path, fresh_cache):
    make_set(tmp_path, gz=False, n_train=12)
    assert len(D.load(data_dir=tmp_path).train_images) == 12
    make_set(tmp_path, gz=False, n_train=7, seed=1)
    assert len(D.load(data_dir=tmp_path).train_images) == 7


def corrupt_cases():
    img = np.zeros((3, 28, 28), dtype=np.uint8)
    good = idx_bytes(img)
    return {
        "bad magic": (good[:0] + b"\x12\x34" + good[2:], "bad magic number 0x12340803"),
        "label magic in image file": (idx_bytes(np.zeros(3, np.uint8)), r"bad magic number 0x00000801 \(expected 0x00000803 for an IDX image file\)"),
        "wrong dtype code": (idx_bytes(img, type_code=0x0D), r"type code 0x0D \(float32\) is not supported"),
        "truncated payload": (good[:-1], "truncated IDX payload: 2351 bytes after the header, expected 3x28x28 = 2352 bytes"),
        "trailing bytes": (good + b"\x00", "trailing bytes"),
        "truncated header": (good[:9], "truncated IDX header"),
        "empty": (b"", "too short for an IDX header"),
    }


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("case", list(corrupt_cases()))
def test_read_idx_corrupt(tmp_path, gz, case):
    payload, pattern = corrupt_cases()[case]
    p = write(tmp_path / "train-images-idx3-ubyte", payload, gz)
    with pytest.raises(DataError, match=pattern) as e:
        D.read_idx(p, expect_ndim=3)
    msg = str(e.value)
    assert msg.startswith(str(p)) and "\n" not in msg


def test_read_idx_truncated_gzip(tmp_path):
    p = tmp_path / "train-images-idx3-ubyte.gz"
    p.write_bytes(gzip.compress(idx_bytes(np.zeros((3, 28, 28), np.uint8)))[:-10])
    with pytest.raises(DataError, match="corrupt or truncated gzip") as e:
        D.read_idx(p)
    assert str(p) in str(e.value)


def test_read_idx_missing_file(tmp_path):
    p = tmp_path / "nope-idx1-ubyte"
    with pytest.raises(DataError, match="file not found") as e:
        D.read_idx(p, expect_ndim=1)
    assert str(p) in str(e.value)


def test_count_mismatch(tmp_path, fresh_cache):
    _, paths = make_set(tmp_path, gz=True)
    write(tmp_path / D.IDX_FILES["train_labels"], idx_bytes(np.zeros(11, np.uint8)), gz=True)
    with pytest.raises(DataError, match="image/label count mismatch") as e:
        D.load(data_dir=tmp_path)
    assert str(paths["train_images"]) in str(e.value) and str(paths["train_labels"]) in str(e.value)
    assert "12 images" in str(e.value) and "11 labels" in str(e.value)


def test_wrong_image_size(tmp_path, fresh_cache):
    make_set(tmp_path, gz=False)
    write(tmp_path / D.IDX_FILES["test_images"], idx_bytes(np.zeros((5, 32, 32), np.uint8)), gz=False)
    with pytest.raises(DataError, match="32x32, expected 28x28"):
        D.load(data_dir=tmp_path)


def test_label_out_of_range(tmp_path, fresh_cache):
    make_set(tmp_path, gz=False)
    write(tmp_path / D.IDX_FILES["test_labels"], idx_bytes(np.full(5, 10, np.uint8)), gz=False)
    with pytest.raises(DataError, match="label 10 out of range"):
        D.load(data_dir=tmp_path)


def test_missing_files(tmp_path):
    with pytest.raises(DataError, match="no MNIST files in") as e:
        D.load(data_dir=tmp_path)
    assert str(tmp_path) in str(e.value) and "train-images-idx3-ubyte[.gz]" in str(e.value)
    assert "MNIST/raw" in str(e.value)

    make_set(tmp_path, gz=True)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"incomplete MNIST files in .*: missing t10k-labels-idx1-ubyte\[\.gz\]"):
        D.find_idx_files(tmp_path)

    missing = tmp_path / "does-not-exist"
    with pytest.raises(DataError, match="does not exist") as e:
        D.load(data_dir=missing)
    assert str(missing) in str(e.value)


# --------------------------------------------------------------------------
# Fashion-MNIST
# --------------------------------------------------------------------------

@pytest.mark.skipif(not D.FASHION_MNIST_DIR.is_dir(), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_from_debian_package(fresh_cache):
    t0 = time.perf_counter()
    d = D.load("fashion-mnist")
    print(f"\nfashion-mnist: load {time.perf_counter() - t0:.3f} s")
    assert d.name == "fashion-mnist" and not d.is_embedded_subset
    assert d.train_images.shape == (60000, 784) and d.test_images.shape == (10000, 784)
    assert d.train_images.dtype == np.uint8 and d.train_labels.dtype == np.uint8
    assert np.bincount(d.train_labels).tolist() == [6000] * 10
    assert np.bincount(d.test_labels).tolist() == [1000] * 10


def test_fashion_mnist_absent(tmp_path, monkeypatch):
    missing = tmp_path / "fashion-mnist"
    monkeypatch.setattr(D, "FASHION_MNIST_DIR", missing)
    with pytest.raises(DataError, match="apt install dataset-fashion-mnist") as e:
        D.load("fashion-mnist")
    assert str(missing) in str(e.value) and "data_dir" in str(e.value) and "\n" not in str(e.value)


def test_fashion_mnist_torchvision_layout(tmp_path, fresh_cache):
    arrays, _ = make_set(tmp_path / "FashionMNIST" / "raw", gz=False)
    d = D.load("fashion-mnist", data_dir=tmp_path)
    assert d.name == "fashion-mnist"
    np.testing.assert_array_equal(d.test_labels, arrays["test_labels"])


# --------------------------------------------------------------------------
# Pixel scaling and binarisation
# --------------------------------------------------------------------------

def test_to_float():
    x = np.array([[0, 51, 255]], dtype=np.uint8)
    f = D.to_float(x)
    assert f.dtype == np.float32
    np.testing.assert_allclose(f, [[0.0, 0.2, 1.0]], rtol=1e-6)
    with pytest.raises(TypeError):
        D.to_float(f)


GREY = np.linspace(0.0, 1.0, 784, dtype=np.float32)[None, :]  # every level once, incl. 0 and 1


def test_binarize_none():
    x = np.repeat(GREY, 4, axis=0)
    out = D.binarize(x, "none")
    assert out.dtype == np.float32 and out.min() >= 0.0 and out.max() <= 1.0
    np.testing.assert_array_equal(out, x)


def test_binarize_static_deterministic_and_binary():
    x = np.repeat(GREY, 8, axis=0)
    a, b = D.binarize(x, "static"), D.binarize(x, "static")
    assert a.dtype == np.float32 and set(np.unique(a).tolist()) <= {0.0, 1.0}
    np.testing.assert_array_equal(a, b)
    assert a[:, 0].max() == 0.0 and a[:, -1].min() == 1.0  # p = 0 and p = 1 are exact


def test_static_binarized_dataset():
    d = D.load()
    train, test = D.static_binarized(d)
    assert train.shape == (4000, 784) and test.shape == (1000, 784)
    assert set(np.unique(train).tolist()) == {0.0, 1.0}
    np.testing.assert_array_equal(train, D.binarize(D.to_float(d.train_images), "static"))
    np.testing.assert_array_equal(test, D.static_binarized(d)[1])


def test_binarize_dynamic_numpy_mean():
    # 4000 draws per grey level: a Bernoulli mean has sd <= 0.5 / sqrt(4000) ~ 0.0079,
    # so 0.04 is a 5-sigma per-level tolerance (fixed seed, so the test is deterministic).
    rng = np.random.default_rng(123)
    x = np.repeat(GREY, 4000, axis=0)
    a = D.binarize(x, "dynamic", rng)
    b = D.binarize(x, "dynamic", rng)
    assert a.dtype == np.float32 and set(np.unique(a).tolist()) == {0.0, 1.0}
    assert not np.array_equal(a, b)
    np.testing.assert_allclose(a.mean(axis=0), GREY[0], atol=0.04)
    assert abs(a.mean() - GREY.mean()) < 0.002  # overall mean: sd ~ 0.5 / sqrt(3.1e6) ~ 3e-4


def test_binarize_dynamic_torch_mean():
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(123)
    x = torch.from_numpy(np.repeat(GREY, 4000, axis=0))
    a = D.binarize(x, "dynamic", g)
    b = D.binarize(x, "dynamic", g)
    assert a.dtype == torch.float32 and set(torch.unique(a).tolist()) == {0.0, 1.0}
    assert not torch.equal(a, b)
    np.testing.assert_allclose(a.mean(dim=0).numpy(), GREY[0], atol=0.04)  # tolerance as above
    # static on a tensor is deterministic too
    assert torch.equal(D.binarize(x[:2], "static"), D.binarize(x[:2], "static"))
    # to_float on a uint8 tensor
    f = D.to_float(torch.tensor([0, 255], dtype=torch.uint8))
    assert f.dtype == torch.float32 and f.tolist() == [0.0, 1.0]


def test_binarize_argument_errors():
    x = np.zeros((2, 784), np.float32)
    with pytest.raises(UserError, match="dynamic, static, none"):
        D.binarize(x, "otsu")
    with pytest.raises(ValueError, match="Generator"):
        D.binarize(x, "dynamic")
    with pytest.raises(TypeError, match="to_float"):
        D.binarize(np.zeros((2, 784), np.uint8), "dynamic", np.random.default_rng(0))
