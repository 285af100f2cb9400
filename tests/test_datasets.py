"""Loaders and splits. Nothing here touches the network: the online loaders read tiny
archives in the real file formats, written by these tests."""

import gzip
import io
import pickle
import shutil
import tarfile
import urllib.request

import numpy as np
import pytest

from cnnstudy.nets import data as datasets
from cnnstudy.nets.data import DataError, load_raw, load_splits, make_splits
from tests.helpers import random_images

# ---------------------------------------------------------------- real-format writers


def _cifar_pickle(x, y, label_key):
    data = x.transpose(0, 3, 1, 2).reshape(len(x), -1)  # CIFAR rows are CHW-flattened
    return pickle.dumps({b"data": data, label_key: list(map(int, y))}, protocol=4)


def write_cifar_tar(path, n_classes, per_batch=20):
    top = "cifar-10-batches-py" if n_classes == 10 else "cifar-100-python"
    key = b"labels" if n_classes == 10 else b"fine_labels"
    names = (
        [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        if n_classes == 10
        else ["train", "test"]
    )
    arrays = {}
    with tarfile.open(path, "w:gz") as tar:
        for i, name in enumerate(names):
            x = random_images(per_batch, (32, 32, 3), seed=i)
            y = np.arange(per_batch) % n_classes
            arrays[name] = (x, y)
            blob = _cifar_pickle(x, y, key)
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return arrays


def write_mnist_npz(path, n=30):
    x, x_t = random_images(n, (28, 28)), random_images(n // 2, (28, 28), seed=1)
    np.savez(path, x_train=x, y_train=np.arange(n) % 10, x_test=x_t, y_test=np.arange(n // 2) % 10)
    return x


def _idx(array, magic):
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes())


def write_fashion_dir(folder, n=30):
    folder.mkdir(parents=True, exist_ok=True)
    x, y = random_images(n, (28, 28)), np.arange(n) % 10
    files = {
        "train-images-idx3-ubyte.gz": _idx(x, 2051),
        "train-labels-idx1-ubyte.gz": _idx(y, 2049),
        "t10k-images-idx3-ubyte.gz": _idx(x[:10], 2051),
        "t10k-labels-idx1-ubyte.gz": _idx(y[:10], 2049),
    }
    for name, blob in files.items():
        (folder / name).write_bytes(blob)
    return x, y


# ---------------------------------------------------------------- local copies


def test_cifar10_local_archive_reads_pixels_in_hwc_order(tmp_path):
    arrays = write_cifar_tar(tmp_path / "cifar-10-python.tar.gz", 10)
    x, y, x_test, y_test = load_raw("cifar10", str(tmp_path / "cifar-10-python.tar.gz"))
    assert x.shape == (100, 32, 32, 3) and x_test.shape == (20, 32, 32, 3)
    np.testing.assert_array_equal(x[:20], arrays["data_batch_1"][0])
    np.testing.assert_array_equal(y_test, arrays["test_batch"][1])


def test_cifar100_local_archive_uses_fine_labels(tmp_path):
    write_cifar_tar(tmp_path / "c100.tar.gz", 100, per_batch=200)
    x, y, _, _ = load_raw("cifar100", str(tmp_path / "c100.tar.gz"))
    assert x.shape == (200, 32, 32, 3) and set(y) == set(range(100))


def test_mnist_npz_and_fashion_idx_local_copies(tmp_path):
    x = write_mnist_npz(tmp_path / "mnist.npz")
    got = load_raw("mnist", str(tmp_path / "mnist.npz"))
    np.testing.assert_array_equal(got[0][..., 0], x)
    fx, fy = write_fashion_dir(tmp_path / "fashion")
    got = load_raw("fashion_mnist", str(tmp_path / "fashion"))
    np.testing.assert_array_equal(got[0][..., 0], fx)
    np.testing.assert_array_equal(got[1], fy)


def test_cifar_pickle_with_foreign_objects_is_refused(tmp_path):
    evil = pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [print]})
    with tarfile.open(tmp_path / "bad.tar.gz", "w:gz") as tar:
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(evil)
            tar.addfile(info, io.BytesIO(evil))
    with pytest.raises(DataError, match="not a readable cifar10 archive"):
        load_raw("cifar10", str(tmp_path / "bad.tar.gz"))


def test_missing_local_copy_says_where_to_get_it(tmp_path):
    with pytest.raises(DataError, match="does not exist.*cifar-10-python.tar.gz"):
        load_raw("cifar10", str(tmp_path / "nope.tar.gz"))


# ---------------------------------------------------------------- keras.datasets and its cache


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    home = tmp_path / "keras_home"
    home.mkdir()
    monkeypatch.setenv("KERAS_HOME", str(home))
    from keras.src.backend import config

    monkeypatch.setattr(config, "_KERAS_DIR", str(home))
    return home


def _serve(monkeypatch, archive):
    """Stand in for the dataset's web server: 'download' our tiny archive; skip the hash
    check (the real file's sha256 cannot match a tiny stand-in)."""
    from keras.src.utils import file_utils

    def fake_urlretrieve(url, filename, reporthook=None, data=None):
        shutil.copy(archive, filename)

    monkeypatch.setattr(file_utils, "urlretrieve", fake_urlretrieve)
    monkeypatch.setattr(file_utils, "validate_file", lambda *a, **k: True)


def test_mnist_through_keras_datasets_download_and_cache(tmp_path, keras_home, monkeypatch):
    # (keras's CIFAR loader preallocates 50000 images, so a tiny stand-in can only go
    # through the local-copy reader above; mnist.npz goes through keras at any size)
    archive = tmp_path / "served.npz"
    x = write_mnist_npz(archive)
    _serve(monkeypatch, archive)
    got = load_raw("mnist")
    np.testing.assert_array_equal(got[0][..., 0], x)
    assert (keras_home / "datasets" / "mnist.npz").exists()
    # the second load comes from the cache: the 'server' is gone
    monkeypatch.setattr("keras.src.utils.file_utils.urlretrieve", None)
    np.testing.assert_array_equal(load_raw("mnist")[0][..., 0], x)


def test_offline_download_failure_explains_the_fix(keras_home, monkeypatch):
    def no_network(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr("keras.src.utils.file_utils.urlretrieve", no_network)
    with pytest.raises(DataError) as err:
        load_raw("mnist")
    msg = str(err.value)
    assert "needs a download" in msg and "data_path" in msg and "mnist5k" in msg


def test_corrupted_cached_archive_says_how_to_clear_the_cache(tmp_path, keras_home, monkeypatch):
    archive = tmp_path / "served.npz"
    write_mnist_npz(archive)
    archive.write_bytes(archive.read_bytes()[:300])  # truncated download
    _serve(monkeypatch, archive)
    with pytest.raises(DataError) as err:
        load_raw("mnist")
    assert "corrupted or truncated" in str(err.value) and "rm -rf" in str(err.value)
    assert str(keras_home / "datasets") in str(err.value)


# ---------------------------------------------------------------- splits


def test_mnist5k_is_sorted_by_class_and_splits_are_shuffled_and_stratified():
    raw = load_raw("mnist5k")
    assert list(raw[1][:500]) == [0] * 500  # as shipped: sorted by class
    splits = make_splits(raw, "mnist5k", val_fraction=0.15, test_fraction=0.15, split_seed=0)
    assert splits.sizes() == {"train": 3500, "val": 750, "test": 750}
    for y in (splits.y_train, splits.y_val, splits.y_test):
        counts = np.bincount(y, minlength=10)
        assert counts.max() - counts.min() <= 1  # stratified: equal classes
    assert len(set(splits.y_train[:20])) > 3  # shuffled
    assert (
        splits.x_train.dtype == np.float32
        and 0.0 <= splits.x_train.min() <= splits.x_train.max() <= 1.0
    )


def test_splits_are_deterministic_and_disjoint():
    a = load_splits("digits", val_fraction=0.2, test_fraction=0.2, split_seed=3)
    b = load_splits("digits", val_fraction=0.2, test_fraction=0.2, split_seed=3)
    c = load_splits("digits", val_fraction=0.2, test_fraction=0.2, split_seed=4)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert not np.array_equal(a.y_train, c.y_train)
    rows = lambda x: {r.tobytes() for r in x}  # noqa: E731
    assert not rows(a.x_test) & rows(a.x_train) - rows(a.x_val)  # no test image in train


def test_official_test_split_is_kept_and_limit_is_stratified(tmp_path):
    write_cifar_tar(tmp_path / "c.tar.gz", 10, per_batch=40)
    raw = load_raw("cifar10", str(tmp_path / "c.tar.gz"))
    s = make_splits(raw, "cifar10", val_fraction=0.1, test_fraction=0.2, split_seed=0, limit=100)
    assert s.sizes()["test"] == 20 and s.sizes()["train"] + s.sizes()["val"] == 80
    assert np.bincount(s.y_test).tolist() == [2] * 10
    assert set(datasets.REGISTRY) >= {
        "mnist5k",
        "digits",
        "mnist",
        "fashion_mnist",
        "cifar10",
        "cifar100",
    }


def test_mnist5k_rgb_has_cifar10s_shape_two_colours_and_no_test_digit_seen_in_training():
    """colour_digits on 60 synthetic 'digits' whose ink areas are 1..60 px (an area survives
    placement and colouring): 12 copies each, background and ink at least 64 levels apart in
    every channel, and no test image a copy of a training digit."""
    n = 60
    x = np.zeros((n, 28, 28, 1))
    block = np.zeros((n, 64))
    for i in range(n):
        block[i, : i + 1] = 255.0
    x[:, 10:18, 10:18, 0] = block.reshape(n, 8, 8)
    y = np.arange(n) % 10
    x_train, y_train, x_test, y_test = datasets.colour_digits((x, y, None, None), seed=0)
    assert x_train.shape == (12 * 50, 32, 32, 3) and x_test.shape == (12 * 10, 32, 32, 3)
    assert x_train.dtype == np.uint8 and np.bincount(y_test).tolist() == [12] * 10

    def areas_and_contrast(images):
        background = images[:, :1, :1, :]  # a corner: the digit is pasted whole, away from it
        ink = (images != background).any(axis=-1)
        gap = np.abs(images.max(axis=(1, 2)).astype(int) - images.min(axis=(1, 2)))
        return ink.sum(axis=(1, 2)), gap

    train_areas, train_gap = areas_and_contrast(x_train)
    test_areas, test_gap = areas_and_contrast(x_test)
    assert min(train_gap.min(), test_gap.min()) >= 64  # two colours, far apart per channel
    assert np.bincount(train_areas).max() == 12 and len(set(train_areas)) == 50
    assert not set(train_areas) & set(test_areas)  # held-out digits only in the test set
    assert set(train_areas) | set(test_areas) == set(range(1, n + 1))
    assert datasets.REGISTRY["mnist5k_rgb"].input_shape == (32, 32, 3)
