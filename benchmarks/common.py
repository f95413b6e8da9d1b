"""Shared helpers of the benchmarks: the CUBA config at any size, the machine's description."""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from neurosim.config import SimulationConfig, load_config, parse_config

T = TypeVar("T")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def cuba_config(n: int, *, seed: int = 1, weight_format: str = "auto") -> SimulationConfig:
    """``examples/cuba.toml`` scaled to ``n`` neurons (80% excitatory), nothing recorded."""
    data = load_config(EXAMPLES / "cuba.toml").model_dump(mode="json")
    for proj in data["network"]["projections"]:
        proj["format"] = weight_format
    data["network"]["populations"][0]["n"] = int(0.8 * n)
    data["network"]["populations"][1]["n"] = n - int(0.8 * n)
    data["network"]["seed"] = seed
    data["record"] = {"spikes": [], "state": []}
    return parse_config(data)


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem_gb:.0f} GiB, {platform.system()} {platform.release()}"


def best_of(repeats: int, run: Callable[..., T], *args: object) -> T:
    """The fastest of ``repeats`` calls of ``run(*args)``, each returning (seconds, ...)."""
    return min((run(*args) for _ in range(repeats)), key=lambda result: result[0])  # type: ignore[index]


def table_header(*columns: str) -> str:
    """A Markdown table's header and rule, for tables too wide to write out on one source line."""
    return f"| {' | '.join(columns)} |\n|{'---|' * len(columns)}"


def run_brian2_standalone(prefix: str, collect: Callable[[float], T]) -> T:
    """Build and run the C++ standalone project that ``net.run`` recorded (after
    ``set_device("cpp_standalone", build_on_run=False)``) in a throwaway directory; ``collect``
    gets Brian2's own run time (s, build excluded) and reads the results. The runtime device
    is restored afterwards, whatever happens."""
    import brian2 as b2

    build_dir = tempfile.mkdtemp(prefix=prefix)
    try:
        b2.device.build(directory=build_dir, compile=True, run=True, debug=False)
        return collect(float(b2.device._last_run_time))
    finally:
        b2.device.reinit()
        b2.device.activate()
        b2.set_device("runtime")
        shutil.rmtree(build_dir, ignore_errors=True)
