"""Shared helpers of the benchmarks: the CUBA config at any size, the machine's description."""

from __future__ import annotations

import os
import platform
from pathlib import Path

from neurosim.config import SimulationConfig, load_config, parse_config

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


def table_header(*columns: str) -> str:
    """A Markdown table's header and rule, for tables too wide to write out on one source line."""
    return f"| {' | '.join(columns)} |\n|{'---|' * len(columns)}"
