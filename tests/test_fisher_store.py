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


def test_an_edited_header_is_detected_and_load_falls_back_to_the_newest_valid_version(tmp_path: Path) -> None:
    store = DirectoryFisherStore(tmp_path)
    store.save(_snap(value=1.0, step=1))
    store.save(_snap(value=2.0, step=2))
    path = tmp_path / "t" / "v000002.fisher"
    original = path.read_bytes()
    for before, after in ((b'"step": 2', b'"step": 9'), (b'"shape": [3, 2]', b'"shape": [2, 3]')):
        assert before in original
        path.write_bytes(original.replace(before, after))
        with pytest.raises(CorruptSnapshotError, match="header checksum"):
            store.load("t", 2)
        fallback = store.load("t")  # the newest valid version, not an exception
        assert fallback.version == 1 and fallback.step == 1
    # a header that checks out but does not fit its payload is corrupt too, not a crash
    from neurosim.learning.fisher import decode_snapshot, encode_snapshot

    data = encode_snapshot(_snap())
    head_len = int.from_bytes(data[12:16], "little")
    header = data[48 : 48 + head_len].replace(b'"nbytes": 24', b'"nbytes": 99')
    import hashlib

    forged = data[:16] + hashlib.sha256(header).digest() + header + data[48 + head_len :]
    with pytest.raises(CorruptSnapshotError, match="inconsistent header"):
        decode_snapshot(forged)


def test_two_processes_saving_one_task_never_share_a_version(tmp_path: Path) -> None:
    writer = textwrap.dedent(f"""
        import numpy as np
        from neurosim.learning.fisher import DirectoryFisherStore, FisherSnapshot
        store = DirectoryFisherStore({str(tmp_path)!r}, keep_last=None)
        for k in range(60):
            store.save(FisherSnapshot("shared", k, {{"w": np.full(1000, k, np.float32)}}))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", writer]) for _ in range(3)]
    assert [p.wait(120) for p in procs] == [0, 0, 0]
    store = DirectoryFisherStore(tmp_path, keep_last=None)
    assert store.versions("shared") == list(range(1, 181))  # 3 x 60 saves, none overwritten
    assert sorted(store.load("shared", v).step for v in range(1, 181)) == sorted(list(range(60)) * 3)
    assert not list((tmp_path / "shared").glob(".*.tmp"))


def test_temporary_files_of_killed_writers_are_removed_on_open(tmp_path: Path) -> None:
    store = DirectoryFisherStore(tmp_path)
    store.save(_snap())
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan = tmp_path / "t" / f".v000002.fisher.{dead.pid}.0a1b2c.tmp"
    legacy = tmp_path / "t" / f".v000003.fisher.{dead.pid}.tmp"  # the name older versions used
    live = tmp_path / "t" / f".v000002.fisher.{os.getpid()}.3d4e5f.tmp"  # a writer at work
    for path in (orphan, legacy, live):
        path.write_bytes(b"x" * 1000)
    reopened = DirectoryFisherStore(tmp_path)
    assert reopened.removed_temporaries == 2
    assert not orphan.exists() and not legacy.exists() and live.exists()
    assert reopened.load("t").version == 1


def test_a_planted_link_under_a_temporary_name_is_never_written_through(tmp_path: Path) -> None:
    from neurosim.outputs import write_json

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "run"
    out.mkdir()
    (out / "summary.json.tmp").symlink_to(victim)  # the name the old writer used
    write_json(out / "summary.json", {"status": "completed"})
    assert victim.read_text() == "precious"
    assert '"completed"' in (out / "summary.json").read_text()
    store = DirectoryFisherStore(tmp_path / "store")
    (tmp_path / "store" / "t").mkdir()
    (tmp_path / "store" / "t" / f".v000001.fisher.{os.getpid()}.tmp").symlink_to(victim)
    store.save(_snap())
    assert victim.read_text() == "precious" and store.load("t").version == 1
