"""Shipped data, task builders, rate encoding, and the full-MNIST loader's failure modes."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from neurosim.datasets import (
    MNISTUnavailable,
    load_digits,
    load_mnist,
    load_mnist_subset,
    permuted_tasks,
    poisson_rates,
    split_tasks,
)
from neurosim.datasets.mnist import read_idx


def test_shipped_sets_load_without_network() -> None:
    digits = load_digits()
    assert len(digits) == 1797 and digits.images.shape == (1797, 64) and digits.images.max() <= 1.0
    mnist = load_mnist_subset()
    assert len(mnist) == 5000 and mnist.shape == (28, 28) and np.bincount(mnist.labels).tolist() == [500] * 10
    train, test = mnist.split(4000, 1000, seed=0)
    assert len(train) == 4000 and len(test) == 1000
    assert len(set(train.labels.tolist())) == 10  # shuffled: the subset is sorted by label


def test_split_tasks_are_disjoint_pairs_with_local_labels() -> None:
    train, test = load_digits().split(1400, 397)
    tasks = split_tasks(train, test)
    assert [t.classes for t in tasks] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    assert [t.task_id for t in tasks] == ["split-01", "split-23", "split-45", "split-67", "split-89"]
    for task in tasks:
        assert set(task.train.labels.tolist()) == set(task.classes) == set(task.test.labels.tolist())
        assert set(task.local_labels(task.train.labels).tolist()) == {0, 1}
    assert sum(len(t.train) for t in tasks) == 1400
    with pytest.raises(ValueError, match="at most 5 tasks"):
        split_tasks(train, test, n_tasks=6)


def test_split_tasks_follow_a_given_class_order() -> None:
    train, test = load_digits().split(1400, 397)
    tasks = split_tasks(train, test, n_tasks=3, class_order=[8, 9, 6, 7, 4, 5, 2, 3, 0, 1])
    assert [t.classes for t in tasks] == [(8, 9), (6, 7), (4, 5)]
    assert [t.task_id for t in tasks] == ["split-89", "split-67", "split-45"]
    assert set(tasks[0].test.labels.tolist()) == {8, 9}
    assert [t.classes for t in split_tasks(train, test, class_order=[3, 1, 2, 0])] == [(3, 1), (2, 0)]
    with pytest.raises(ValueError, match=r"\[11\] are not among them"):
        split_tasks(train, test, class_order=[0, 11])
    with pytest.raises(ValueError, match="must list distinct classes"):
        split_tasks(train, test, class_order=[0, 0, 1, 2])
    with pytest.raises(ValueError, match="at most 2 tasks"):
        split_tasks(train, test, n_tasks=3, class_order=[0, 1, 2, 3])


def test_permuted_tasks_keep_labels_and_permute_pixels_consistently() -> None:
    train, test = load_digits().split(500, 100)
    tasks = permuted_tasks(train, test, n_tasks=3, seed=1)
    assert np.array_equal(tasks[0].train.images, train.images)  # the first task is unpermuted
    perm = tasks[2].permutation
    assert perm is not None and sorted(perm.tolist()) == list(range(64))
    assert np.array_equal(tasks[2].train.images, train.images[:, perm])
    assert np.array_equal(tasks[2].test.images, test.images[:, perm])
    assert np.array_equal(tasks[1].train.labels, train.labels)


def test_poisson_rates() -> None:
    rates = poisson_rates(np.array([[0.0, 0.5, 1.0]], np.float32), 63.75)
    np.testing.assert_allclose(rates, [[0.0, 31.875, 63.75]])
    with pytest.raises(ValueError, match="intensities in"):
        poisson_rates(np.array([[2.0]], np.float32), 10.0)


def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def test_idx_reader_and_truncation(tmp_path: Path) -> None:
    data = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    with gzip.open(tmp_path / "x.gz", "wb") as fh:
        fh.write(_idx(data))
    assert np.array_equal(read_idx(tmp_path / "x.gz"), data)
    with gzip.open(tmp_path / "bad.gz", "wb") as fh:
        fh.write(bytes([0, 0, 8, 1, 0, 0, 0, 10, 1, 2]))
    with pytest.raises(MNISTUnavailable, match="truncated"):
        read_idx(tmp_path / "bad.gz")


def test_offline_full_mnist_fails_with_a_clear_message(tmp_path: Path) -> None:
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"not mnist")  # a damaged cache entry
    with pytest.raises(MNISTUnavailable, match="not available") as info:
        load_mnist(tmp_path, mirrors=("http://127.0.0.1:9/",), timeout=2.0)
    message = str(info.value)
    assert "checksum mismatch" in message and str(tmp_path) in message and "load_mnist_subset" in message
    assert not (tmp_path / "train-images-idx3-ubyte.gz").exists()
    with pytest.raises(MNISTUnavailable, match="missing"):
        load_mnist(tmp_path, download=False)


def test_full_mnist_cache_may_hold_the_files_uncompressed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Uncompressed files are accepted when they match their MD5; a mismatching one is named, and kept."""
    import hashlib

    from neurosim.datasets import mnist

    rng = np.random.default_rng(0)
    contents = {
        "train-images-idx3-ubyte": _idx(rng.integers(0, 256, (6, 28, 28))),
        "train-labels-idx1-ubyte": _idx(np.arange(6) % 10),
        "t10k-images-idx3-ubyte": _idx(rng.integers(0, 256, (4, 28, 28))),
        "t10k-labels-idx1-ubyte": _idx(np.array([7, 2, 1, 0])),
    }
    for name, data in contents.items():
        (tmp_path / name).write_bytes(data)
    monkeypatch.setattr(mnist, "UNCOMPRESSED", {n: hashlib.md5(d).hexdigest() for n, d in contents.items()})
    train, test = load_mnist(tmp_path, download=False)
    assert train.images.shape == (6, 784) and test.labels.tolist() == [7, 2, 1, 0]
    assert train.images.max() <= 1.0 and np.allclose(
        test.images[0] * 255, np.frombuffer(contents["t10k-images-idx3-ubyte"][16 : 16 + 784], np.uint8)
    )

    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx(np.array([7, 2, 1, 1])))  # altered
    with pytest.raises(MNISTUnavailable, match="t10k-labels-idx1-ubyte: checksum mismatch") as info:
        load_mnist(tmp_path, download=False)
    assert "t10k-labels-idx1-ubyte.gz: missing" in str(info.value)
    assert (tmp_path / "t10k-labels-idx1-ubyte").exists()
