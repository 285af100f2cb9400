"""The dataset catalogue: what each dataset is (keras-free metadata, no loading).

Validation reads it to check a study's dataset and input size before anything loads;
``nets.data`` loads and splits the data.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    input_shape: tuple[int, int, int]
    n_classes: int
    offline: bool
    scale: float  # raw pixel maximum: inputs are divided by it
    origin: str = ""  # what keras.datasets downloads
    cache_names: tuple[str, ...] = ()  # what it leaves under $KERAS_HOME/datasets
    plain_background: bool = True  # content on zeros: the border probe can find and move it


CANVAS = 40  # px: the translated and cluttered canvases
REGISTRY: dict[str, DatasetInfo] = {
    d.name: d
    for d in (
        DatasetInfo("mnist5k", (28, 28, 1), 10, True, 255.0),
        DatasetInfo("digits", (8, 8, 1), 10, True, 16.0),
        # mnist5k digits pasted at random places on a 40x40 canvas (translated MNIST, Jaderberg
        # et al. 2015), and the same plus 8x8 fragments of other digits as clutter
        DatasetInfo("mnist5k_translated", (CANVAS, CANVAS, 1), 10, True, 255.0),
        DatasetInfo(
            "mnist5k_cluttered", (CANVAS, CANVAS, 1), 10, True, 255.0, plain_background=False
        ),  # fmt: skip
        # CIFAR-10's shape and size from mnist5k, for the GPU throughput runs offline (see
        # nets.data.colour_digits): not CIFAR-10's difficulty, so its verdicts are not CIFAR's
        DatasetInfo("mnist5k_rgb", (32, 32, 3), 10, True, 255.0, plain_background=False),
        DatasetInfo(
            "mnist",
            (28, 28, 1),
            10,
            False,
            255.0,
            "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz",
            ("mnist.npz",),
        ),
        DatasetInfo(
            "fashion_mnist",
            (28, 28, 1),
            10,
            False,
            255.0,
            "https://storage.googleapis.com/tensorflow/tf-keras-datasets/ (4 .gz files)",
            ("fashion-mnist",),
        ),
        DatasetInfo(
            "cifar10",
            (32, 32, 3),
            10,
            False,
            255.0,
            "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
            ("cifar-10-batches-py-target", "cifar-10-batches-py-target_archive"),
            plain_background=False,
        ),
        DatasetInfo(
            "cifar100",
            (32, 32, 3),
            100,
            False,
            255.0,
            "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
            ("cifar-100-python-target", "cifar-100-python-target_archive"),
            plain_background=False,
        ),
    )
}
