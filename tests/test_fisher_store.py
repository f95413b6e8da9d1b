"""Fisher stores: versions, retention, checksums, atomic writes that survive SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from neurosim.learning.fisher import (
    CorruptSnapshotError,
    DirectoryFisherStore,
    FisherKind,
    FisherSnapshot,
    InMemoryFisherStore,
    OnlineFisherSnapshot,
    SnapshotNotFoundError,
    SnapshotReason,
    estimate_fisher,
)


def _snap(task: str = "t", value: float = 1.0, step: int = 1) -> FisherSnapshot:
    return FisherSnapshot(task, step, {"w": np.full((3, 2), value, np.float32), "b": np.arange(4, dtype=np.float32)})


@pytest.mark.parametrize(
    "make", [lambda p: InMemoryFisherStore(keep_last=2), lambda p: DirectoryFisherStore(p, keep_last=2)]
)
def test_versions_latest_and_retention(make, tmp_path: Path) -> None:
    store = make(tmp_path)
    for k in range(1, 5):
        assert store.save(_snap(value=k, step=k)).version == k
    store.save(_snap("other", 9.0))
    assert store.tasks() == ["other", "t"]
    assert store.versions("t") == [3, 4]  # the last two kept
    assert store.load("t").step == 4 and float(store.load("t", 3).arrays["w"][0, 0]) == 3.0
    with pytest.raises(SnapshotNotFoundError):
        store.load("t", 1)
    with pytest.raises(SnapshotNotFoundError):
        store.load("missing")


def test_directory_store_round_trips_online_provenance(tmp_path: Path) -> None:
    store = DirectoryFisherStore(tmp_path)
    snap = OnlineFisherSnapshot("task-1", 120, {"w": np.random.default_rng(0).random((5, 7), dtype=np.float32)},
                                alpha=0.01, ema_steps=120, samples_seen=125, reason=SnapshotReason.SLEEP,
                                max_delta=0.25, steps_since_previous=20)  # fmt: skip
    store.save(snap)
    loaded = DirectoryFisherStore(tmp_path).load("task-1")
    assert isinstance(loaded, OnlineFisherSnapshot)
    assert (loaded.alpha, loaded.ema_steps, loaded.samples_seen, loaded.reason, loaded.max_delta) == (
        0.01, 120, 125, SnapshotReason.SLEEP, 0.25)  # fmt: skip
    np.testing.assert_array_equal(loaded.arrays["w"], snap.arrays["w"])
    assert loaded.created_at == snap.created_at and loaded.version == 1


def test_damaged_file_is_detected_and_older_versions_stay_readable(tmp_path: Path) -> None:
    store = DirectoryFisherStore(tmp_path)
    store.save(_snap(value=1.0))
    store.save(_snap(value=2.0))
    path = tmp_path / "t" / "v000002.fisher"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptSnapshotError, match="checksum mismatch"):
        store.load("t", 2)
    assert float(store.load("t").arrays["w"][0, 0]) == 1.0  # the latest valid one
    path.write_bytes(bytes(data[:20]))
    with pytest.raises(CorruptSnapshotError, match=r"truncated|unreadable"):
        store.load("t", 2)


def test_bad_task_ids_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="task id"):
        DirectoryFisherStore(tmp_path).save(_snap("../escape"))


_WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    from neurosim.learning.fisher import DirectoryFisherStore, FisherSnapshot
    store = DirectoryFisherStore(sys.argv[1], keep_last=None)
    k = 0
    while True:
        k += 1
        # 8 MB per snapshot, every value equal to the step: a torn write would show
        store.save(FisherSnapshot("stream", k, {"w": np.full(2_000_000, k, np.float32)}))
        print(k, flush=True)
    """
)


def test_directory_store_survives_sigkill_mid_stream(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        seen = 0
        deadline = time.monotonic() + 60
        while seen < 5 and time.monotonic() < deadline:
            seen = int(proc.stdout.readline())
        time.sleep(0.013)  # land somewhere inside a later write
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    store = DirectoryFisherStore(tmp_path, keep_last=None)
    latest = store.load("stream")
    assert latest.step >= 5 and latest.version == latest.step
    assert np.all(latest.arrays["w"] == latest.step)
    for version in store.versions("stream"):  # every listed version is complete
        assert np.all(store.load("stream", version).arrays["w"] == version)


def test_full_batch_fisher_empirical_and_true() -> None:
    gen = torch.Generator().manual_seed(0)
    w = torch.randn((3, 4), generator=gen, requires_grad=True)

    def log_prob(x: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(x @ w.T, dim=-1)

    x = torch.randn((5, 4), generator=gen)
    y = torch.tensor([0, 1, 2, 1, 0])
    emp = estimate_fisher({"w": w}, log_prob, [(x, y)], kind=FisherKind.EMPIRICAL)["w"]
    manual = sum(torch.autograd.grad(log_prob(x[n : n + 1])[0, y[n]], w)[0] ** 2 for n in range(5)) / 5
    np.testing.assert_allclose(emp, manual.numpy(), rtol=1e-5)
    # the true Fisher is E_{y ~ p(y|x)} g_y^2: sampling many labels approaches the exact sum
    exact = torch.zeros_like(w)
    for n in range(5):
        p = log_prob(x[n : n + 1])[0].exp().detach()
        for label in range(3):
            exact += p[label] * torch.autograd.grad(log_prob(x[n : n + 1])[0, label], w)[0] ** 2 / 5
    repeated = [(x, y)] * 1000
    true = estimate_fisher({"w": w}, log_prob, repeated, kind=FisherKind.TRUE, generator=gen)["w"]
    assert np.linalg.norm(true - exact.numpy()) / np.linalg.norm(exact.numpy()) < 0.1  # sampling noise ~0.03
