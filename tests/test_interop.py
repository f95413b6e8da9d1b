"""Spikes out to Neo (and Elephant) and NWB (checked by the NWB Inspector)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import EXAMPLES

from neurosim.cli import main
from neurosim.interop.neo_io import to_block
from neurosim.sim import Network, PoissonInput, Simulation, SpikeMonitor

neo = pytest.importorskip("neo")
pq = pytest.importorskip("quantities")
pynwb = pytest.importorskip("pynwb")
nwbinspector = pytest.importorskip("nwbinspector")


@pytest.fixture(scope="module")
def cuba_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("interop") / "cuba"
    result = CliRunner().invoke(main, ["run", str(EXAMPLES / "cuba.toml"), "--out", str(out), "--duration", "0.3",
                                       "--quiet"])  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


def test_a_run_becomes_a_neo_block_with_units_and_every_spike(cuba_run: Path) -> None:
    block = to_block(cuba_run)
    summary = json.loads((cuba_run / "summary.json").read_text())
    (segment,) = block.segments
    trains = segment.spiketrains
    assert len(trains) == 4000  # silent neurons included: rates average over the population
    assert sum(len(t) for t in trains) == sum(p["spikes"] for p in summary["populations"].values())
    first = trains[0]
    assert first.units == pq.s and float(first.t_stop) == pytest.approx(0.3)
    assert first.annotations["population"] == "exc" and first.annotations["index"] == 0
    assert [g.name for g in block.groups] == ["exc", "inh"] and len(block.groups[1].spiketrains) == 800
    with np.load(cuba_run / "spikes.npz") as spikes:
        mine = spikes["exc_indices"] == 7
        assert np.array_equal(np.asarray(trains[7].magnitude), np.sort(spikes["exc_times"][mine]))


def test_elephant_reads_the_trains(cuba_run: Path) -> None:
    statistics = pytest.importorskip("elephant.statistics")
    trains = to_block(cuba_run).groups[0].spiketrains
    rates = [float(statistics.mean_firing_rate(t).rescale(pq.Hz)) for t in trains]
    summary = json.loads((cuba_run / "summary.json").read_text())
    assert np.mean(rates) == pytest.approx(summary["populations"]["exc"]["rate_hz"])


def test_a_simulation_with_a_subset_monitor_exports_only_that_subset() -> None:
    net = Network()
    net.add_input(PoissonInput("in", 50, 40.0))
    sim = Simulation(net, dt=1e-4, batch=2)
    sim.add_monitor(SpikeMonitor("in", indices=[3, 9, 11]))
    sim.run(0.2)
    block = to_block(sim)
    assert len(block.segments) == 2  # one per batch instance
    assert [t.annotations["index"] for t in block.segments[1].spiketrains] == [3, 9, 11]
    with pytest.raises(ValueError, match="no SpikeMonitor"):
        to_block(Simulation(net, dt=1e-4))


def test_neurosim_export_writes_an_nwb_file_the_inspector_passes(cuba_run: Path, tmp_path: Path) -> None:
    target = tmp_path / "cuba.nwb"
    result = CliRunner().invoke(main, ["export", str(cuba_run), "--format", "nwb", "--out", str(target),
                                       "--experimenter", "Doe, Jane", "--institution", "neurosim tests"])  # fmt: skip
    assert result.exit_code == 0, result.output
    messages = list(nwbinspector.inspect_nwbfile(nwbfile_path=str(target)))
    assert messages == [], [(m.importance.name, m.check_function_name, m.message) for m in messages]
    with pynwb.NWBHDF5IO(str(target), "r") as io:
        nwb = io.read()
        units = nwb.units.to_dataframe()
        assert len(units) == 4000 and set(units["population"]) == {"exc", "inh"}
        with np.load(cuba_run / "spikes.npz") as spikes:
            assert sum(len(t) for t in units["spike_times"]) == spikes["exc_times"].size + spikes["inh_times"].size
        assert nwb.units.resolution == pytest.approx(1e-4)
        v = nwb.processing["misc"]["exc_v"]
        assert v.unit == "volts" and v.data.shape[0] > 0
        assert json.loads(nwb.source_script)["run"]["duration"] == 0.3
    without = CliRunner().invoke(main, ["export", str(cuba_run)])  # defaults: DIR/run.nwb
    assert without.exit_code == 0 and (cuba_run / "run.nwb").is_file()
    not_a_run = CliRunner().invoke(main, ["export", str(tmp_path)])
    assert not_a_run.exit_code != 0 and "not the output directory" in not_a_run.output
