"""A run's spikes and recorded state as an NWB file (Rübel et al. 2022, eLife 11:e78362),
the format of the DANDI archive, readable by any NWB tool (pynwb, MatNWB, NWB Widgets).

``write_nwb(run_dir, path)`` writes:

- ``units``: one row per recorded neuron and batch instance, its ``spike_times`` (s), with
  columns ``population``, ``neuron_index`` and ``instance``;
- ``processing/simulation``: each recorded state variable as a ``TimeSeries``
  (``<population>_<variable>``, SI units, sampled at a fixed rate), when the run recorded
  state;
- the resolved config as the file's ``source_script`` (``config.json``), the simulated
  duration, seed, time step and neurosim version in ``notes``.

NWB requires a subject; a simulation has no animal, so the subject is the simulated network:
species NCBI Taxonomy 32630 ("synthetic construct"), sex ``U`` (unknown), born when the run
started. The NWB Inspector finds nothing above a best-practice suggestion (the experimenter
and institution, when not given); a test holds it.
"""

from __future__ import annotations

import datetime as _dt
import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np

import neurosim
from neurosim.interop.run_outputs import RunOutputs

__all__ = ["SYNTHETIC_CONSTRUCT", "write_nwb"]

# NCBI Taxonomy 32630, "synthetic construct": the species of a simulated network
SYNTHETIC_CONSTRUCT = "http://purl.obolibrary.org/obo/NCBITaxon_32630"

# units of the state variables a run can record (neurons.STATE_VARIABLES)
_STATE_UNITS = {
    "v": "volts",
    "theta": "volts",
    "g_exc": "volts or leak-relative conductance",
    "g_inh": "volts or leak-relative conductance",
    "refractory": "steps",
}


def write_nwb(
    run_dir: str | Path, path: str | Path, *, experimenter: str | None = None, institution: str | None = None
) -> Path:
    """Write the run in ``run_dir`` to the NWB file ``path`` (replaced if it exists)."""
    from pynwb import NWBHDF5IO, NWBFile, TimeSeries
    from pynwb.file import Subject

    outputs = RunOutputs.read(run_dir)
    run = outputs.config.get("run", {})
    started = _dt.datetime.fromtimestamp((outputs.directory / "config.json").stat().st_mtime, tz=_dt.UTC)
    nwb = NWBFile(
        session_description=f"neurosim simulation {outputs.config.get('name', '')!s}: "
        f"{outputs.duration_s:g} s of simulated time",
        identifier=str(uuid.uuid4()),
        session_start_time=started,
        experiment_description=outputs.config.get("description") or "spiking network simulated with neurosim",
        experimenter=[experimenter] if experimenter else None,
        institution=institution,
        keywords=["simulation", "spiking neural network", "neurosim"],
        source_script=json.dumps(outputs.config, indent=1),
        source_script_file_name="config.json",
        notes=json.dumps(
            {
                "simulated_s": outputs.duration_s,
                "dt_s": run.get("dt"),
                "seed": run.get("seed"),
                "batch": outputs.batch,
                "status": outputs.summary.get("status"),
                "neurosim_version": neurosim.__version__,
            }
        ),
    )
    nwb.units = _units_table(outputs, resolution=float(run.get("dt") or 0.0) or -1.0)
    nwb.subject = Subject(  # the simulated network itself: NWB requires a subject, and this one is synthetic
        subject_id=f"neurosim-{outputs.directory.name}",
        description="in silico: a spiking network simulated by neurosim (no animal); the network is in the "
        "config (source_script)",
        species=SYNTHETIC_CONSTRUCT,
        sex="U",
        date_of_birth=started,  # the network came into being when the run started
    )
    if outputs.state:
        module = nwb.create_processing_module("misc", "state variables recorded by neurosim's StateMonitor")
        for key, values in outputs.state.items():
            if key.endswith("_times"):
                continue
            population, variable = _split_state_key(key, outputs.state)
            times = outputs.state[f"{population}_times"]
            rate = 1.0 / float(np.median(np.diff(times))) if times.size > 1 else 1.0
            module.add(
                TimeSeries(
                    name=key,
                    data=np.asarray(values, dtype=np.float64).reshape(values.shape[0], -1),
                    unit=_STATE_UNITS.get(variable, "n.a."),
                    starting_time=float(times[0]) if times.size else 0.0,
                    rate=rate,
                    description=f"{variable} of the recorded {population} neurons "
                    "(columns: instance-major, then neuron)",
                )
            )
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.stem}.{uuid.uuid4().hex}.tmp.nwb")
    try:
        with NWBHDF5IO(str(staging), "w") as io:
            io.write(nwb)
        staging.replace(target)
    finally:
        staging.unlink(missing_ok=True)
    return target


def _units_table(outputs: RunOutputs, *, resolution: float) -> Any:
    """Every recorded neuron of every instance as one unit, built column by column (one
    ``add_unit`` call per neuron takes seconds for a few thousand)."""
    from hdmf.common import VectorData, VectorIndex
    from pynwb.misc import Units

    times_parts, counts, populations, indices, instances = [], [], [], [], []
    for population, trains in outputs.spikes.items():
        n = outputs.sizes[population]
        for instance in range(outputs.batch):
            mine = trains.instances == instance
            order = np.lexsort((trains.times[mine], trains.indices[mine]))  # by neuron, then time
            times_parts.append(trains.times[mine][order])
            counts.append(np.bincount(trains.indices[mine], minlength=n))
            populations += [population] * n
            indices.append(np.arange(n))
            instances.append(np.full(n, instance))
    spike_times = VectorData(
        name="spike_times",
        description="spike times (s) of each unit",
        data=np.concatenate(times_parts) if times_parts else np.zeros(0),
    )
    ends = np.cumsum(np.concatenate(counts)) if counts else np.zeros(0, np.int64)
    columns = [
        spike_times,
        VectorIndex(name="spike_times_index", data=ends, target=spike_times),
        VectorData(name="population", description="the neurosim population or input of the neuron", data=populations),
        VectorData(
            name="neuron_index",
            description="the neuron's index within its population",
            data=np.concatenate(indices) if indices else np.zeros(0, np.int64),
        ),
        VectorData(
            name="instance",
            description="the batch instance (an independent copy of the network)",
            data=np.concatenate(instances) if instances else np.zeros(0, np.int64),
        ),
    ]
    return Units(
        name="units",
        description="neurons recorded by neurosim's SpikeMonitor",
        resolution=resolution,
        columns=columns,
        id=list(range(len(populations))),
    )


def _split_state_key(key: str, state: dict[str, Any]) -> tuple[str, str]:
    """``exc_g_exc`` -> (``exc``, ``g_exc``): the population is the prefix that has ``_times``."""
    for cut in range(len(key)):
        if key[cut] == "_" and f"{key[:cut]}_times" in state:
            return key[:cut], key[cut + 1 :]
    return key, key
