"""The continual-learning benchmark's smoke runs (``--quick``): the whole pipeline, at toy size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MLP_METHODS = ["none", "joint", "ewc", "online_ewc", "si", "online_fisher_ewc"]

pytestmark = pytest.mark.timeout(600)


def _run(module: str, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", module, "--quick", "--out", str(out), *extra],
                          cwd=ROOT, capture_output=True, text=True, env=env, check=False)  # fmt: skip


def test_quick_run_writes_the_table_json_and_plot(tmp_path: Path) -> None:
    single_runs = {  # summarise_runs' results for runs at the published length, as they lie beside the report
        "permuted_domain_il": {"ewc": {"mean": 0.91, "std": 0.003, "seeds": 3, "strength": 100.0,
                                       "wall_s_mean": 1200.0, "fisher_s_mean": 30.0},
                               "online_fisher_ewc": {"mean": 0.905, "std": 0.004, "seeds": 3, "strength": 300.0,
                                                     "wall_s_mean": 1300.0, "fisher_s_mean": 15.0,
                                                     "fisher_alpha": 0.3, "fisher_every": 50,
                                                     "fisher_labels": "true", "fisher_per_sample": True}},
        "dataset": "mnist", "iterations_per_context": 5000, "machine": "elsewhere",
    }  # fmt: skip
    (tmp_path / "permuted_published_iterations.json").write_text(json.dumps(single_runs))
    done = _run("benchmarks.continual", tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "continual.json").read_text())
    assert results["dataset"] == "digits" and results["machine"]
    for protocol in ("split_task_il", "permuted_domain_il"):
        assert sorted(results[protocol]) == sorted(MLP_METHODS)
        for method in MLP_METHODS:
            entry = results[protocol][method]
            assert entry["seeds"] == 2 and len(entry["per_seed"]) == 2
            assert 0.0 <= entry["mean"] <= 1.0 and entry["std"] >= 0.0
        for method in ("ewc", "online_ewc", "si", "online_fisher_ewc"):  # chosen on validation, from the grid
            search = results[protocol][method]["validation_search"]
            assert len(search) == 2 and results[protocol][method]["strength"] == float(max(search, key=search.get))
        assert results[protocol]["ewc"]["fisher_s_mean"] > 0
    split = results["split_task_il"]
    assert split["joint"]["mean"] > 0.9  # two-way heads on 8x8 digits: easy when learned together
    for protocol in ("split_task_il", "permuted_domain_il"):  # the per-protocol records the report is built from
        record = json.loads((tmp_path / f"continual_{protocol}.json").read_text())
        assert record["settings"]["hidden"] == 100 and record["methods"]["none"]["curve_seed0"]
    table = (tmp_path / "continual.md").read_text()
    for published in ("0.958", "0.974", "0.985", "0.838", "0.843", "0.447"):
        assert published in table
    assert (tmp_path / "continual.png").stat().st_size > 20_000
    # the single runs at the published length get their own section, verdict and JSON entry
    section = table.split("## permuted_domain_il at the published 5000 iterations per context", 1)[1]
    assert "| ewc | 100 | 0.9100 +- 0.0030 | 0.838 | yes |" in section
    assert "300 (EMA rate 0.3, every 50 steps, sampled labels, per-sample squares)" in section
    assert "0.9050 against 0.9100 +- 0.0030 (-0.0050: more than one EWC standard deviation below)" in section
    assert "(0.50x)" in section
    assert results["published_length_single_runs"] == single_runs


def test_quick_spiking_run(tmp_path: Path) -> None:
    done = _run("benchmarks.continual", tmp_path, "--network", "spiking", "--protocols", "split_task_il")
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "continual_spiking.json").read_text())
    assert sorted(results["split_task_il"]) == ["ewc", "none", "online_fisher_ewc", "sleep"]
    assert all(0.0 <= r["mean"] <= 1.0 for r in results["split_task_il"].values())
    assert "sleep" in (tmp_path / "continual_spiking.md").read_text()


def test_a_rerun_with_a_wider_grid_runs_only_what_is_missing(tmp_path: Path) -> None:
    split = ("--protocols", "split_task_il", "--iterations", "5")
    first = _run("benchmarks.continual", tmp_path, *split)
    assert first.returncode == 0, first.stderr[-3000:]
    path = tmp_path / "continual_split_task_il.json"
    before = json.loads(path.read_text())
    runs_before = len(list(tmp_path.glob("sweeps/*/*/*/run_result.json")))
    assert runs_before == 6 * 2 + 4 * 2  # 6 methods x 2 test seeds, 4 regularised x 2 strengths x 1 search seed

    widened = _run("benchmarks.continual", tmp_path, *split, "--methods", "ewc", "si",
                   "--grid", "ewc=1e3,1e5,1e6", "--grid", "si=1")  # fmt: skip
    assert widened.returncode == 0, widened.stderr[-3000:]
    after = json.loads(path.read_text())
    for method in ("none", "joint", "online_ewc", "online_fisher_ewc"):  # not run: kept as they were
        assert after["methods"][method] == before["methods"][method]
    ewc_before, ewc_after = before["methods"]["ewc"], after["methods"]["ewc"]
    assert set(ewc_after["validation_search"]) == {"1000", "100000", "1e+06"}
    for value, score in ewc_before["validation_search"].items():  # the same runs, found in the cache
        assert ewc_after["validation_search"][value] == score
    best = max(ewc_after["validation_search"], key=ewc_after["validation_search"].get)
    assert ewc_after["strength"] == float(best)
    same_choice = ewc_after["strength"] == ewc_before["strength"]
    if same_choice:
        assert ewc_after["per_seed"] == ewc_before["per_seed"]
    assert after["methods"]["si"]["per_seed"] == before["methods"]["si"]["per_seed"] or (
        before["methods"]["si"]["strength"] != 1.0
    )
    # only the new strength's search run (and the test seeds of a new choice) ran
    new_runs = len(list(tmp_path.glob("sweeps/*/*/*/run_result.json"))) - runs_before
    si_new = 0 if before["methods"]["si"]["strength"] == 1.0 else 2
    assert new_runs == 1 + (0 if same_choice else 2) + si_new
    assert "; then " in after["command"] and after["wall_s"] > before["wall_s"]

    other = _run("benchmarks.continual", tmp_path, "--protocols", "split_task_il", "--iterations", "7")
    assert other.returncode == 2 and "Give another --out" in other.stderr
    assert json.loads(path.read_text()) == after  # a record with other settings is left alone


def test_online_fisher_feeding_options_reach_the_record_and_bad_choices_are_refused(tmp_path: Path) -> None:
    tiny = ("--protocols", "split_task_il", "--iterations", "2", "--seeds", "1")
    done = _run("benchmarks.continual", tmp_path, *tiny, "--methods", "online_fisher_ewc", "--fisher-alpha", "0.3",
                "--fisher-every", "2")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    entry = json.loads((tmp_path / "continual_split_task_il.json").read_text())["methods"]["online_fisher_ewc"]
    assert (entry["fisher_alpha"], entry["fisher_every"]) == (0.3, 2)
    for extra, message in ((("--fisher-alpha", "1.5"), "--fisher-alpha must be in (0, 1]"),
                           (("--network", "spiking", "--methods", "replay"), "the spiking network's methods"),
                           (("--network", "spiking", "--protocols", "split_class_il"), "the spiking network runs")):
        refused = _run("benchmarks.continual", tmp_path / "refused", *extra)
        assert refused.returncode == 2 and message in refused.stderr, refused.stderr[-2000:]
    assert not (tmp_path / "refused").exists()  # refused before anything ran


def test_separate_processes_on_one_protocol_keep_each_others_results(tmp_path: Path) -> None:
    from benchmarks.continual.protocol import (
        MLP_METHODS,
        DatasetName,
        Method,
        ProtocolName,
        RunConfig,
        RunResult,
        Settings,
    )
    from benchmarks.continual.report import ProtocolRecord
    from benchmarks.continual.sweep_runs import MethodSummary

    settings = Settings(hidden=10, contexts=2, iterations_per_context=1, lr=1e-3, batch_size=8, fisher_samples=4)

    def summary(method: Method, accuracy: float) -> dict[Method, MethodSummary]:
        result = RunResult(RunConfig(method), [accuracy], accuracy, [(1, [accuracy])], wall_s=1.0)
        return {method: MethodSummary(method, None, [result], {})}

    # both open the record before either finishes, as two runs started side by side do
    args = (tmp_path, "continual", ProtocolName.SPLIT_TASK_IL, DatasetName.DIGITS, settings)
    ewc_run, si_run = ProtocolRecord.open(*args), ProtocolRecord.open(*args)
    save = (ProtocolName.SPLIT_TASK_IL, DatasetName.DIGITS, settings)
    ewc_run.save(*save, "run ewc", 1.0, summary(Method.EWC, 0.9), MLP_METHODS)
    written = si_run.save(*save, "run si", 2.0, summary(Method.SI, 0.8), MLP_METHODS)
    record = json.loads(written.read_text())
    assert written == tmp_path / "continual_split_task_il.json"
    assert record["methods"]["ewc"]["mean"] == 0.9 and record["methods"]["si"]["mean"] == 0.8
    assert record["command"] == "run ewc; then run si" and record["wall_s"] == 3.0


def test_full_mnist_missing_from_the_cache_is_a_clear_error(tmp_path: Path) -> None:
    env = {**os.environ, "NEUROSIM_DATA": str(tmp_path / "empty")}
    for network in ("mlp", "spiking"):
        done = subprocess.run([sys.executable, "-m", "benchmarks.continual", "--network", network, "--dataset", "mnist",
                               "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, env=env,
                              check=False)  # fmt: skip
        assert done.returncode == 2, done.stderr[-2000:]
        assert "train-images-idx3-ubyte.gz" in done.stderr and "--dataset mnist-subset" in done.stderr
        assert "scripts/get_mnist.sh" in done.stderr
        assert "Traceback" not in done.stderr
        assert not list(tmp_path.glob("continual*.json"))  # nothing ran, nothing written


def test_runs_are_reused_only_when_made_the_same_way(tmp_path: Path) -> None:
    """Every run lies in a sweep directory whose digest covers what it depends on: the same
    search and test runs again are found there; online-Fisher EWC fed another way runs anew."""
    import dataclasses
    import io

    from tqdm.auto import tqdm

    from benchmarks.continual.protocol import DatasetName, Method, OnlineFisher, ProtocolName, protocol, run
    from benchmarks.continual.sweep_runs import Runner, _contexts, evaluate_method

    tiny = dataclasses.replace(protocol(ProtocolName.SPLIT_TASK_IL, iterations=4, hidden=10), fisher_samples=10)
    method = Method.ONLINE_FISHER_EWC

    def evaluate(online: OnlineFisher) -> tuple[list[float], int]:
        with tqdm(file=io.StringIO()) as bar:
            runner = Runner(tiny, DatasetName.DIGITS, tmp_path, bar)
            summary = evaluate_method(runner, method, [10.0, 100.0], seeds=2, search_seeds=1, online_fisher=online,
                                      curves_every=2)  # fmt: skip
            assert bar.n == 4 * tiny.iterations * tiny.n_contexts  # found or run, every run counted
        assert summary.online_fisher == online and summary.strength in (10.0, 100.0)
        direct = run(tiny, _contexts(tiny, DatasetName.DIGITS), summary.results[1].config)
        assert summary.results[1].final_accuracy == direct.final_accuracy  # the sweep runs what run() runs
        return [r.average_accuracy for r in summary.results], len(list(tmp_path.glob("sweeps/*/*/*/run_result.json")))

    first, count = evaluate(OnlineFisher(0.01))
    assert count == 4
    again, count_again = evaluate(OnlineFisher(0.01))
    assert again == first and count_again == 4  # nothing ran again
    for other_way in (OnlineFisher(0.1), OnlineFisher(0.01, every=2)):
        _, count = evaluate(other_way)
        assert count > count_again
        count_again = count


def test_online_fisher_every_n_steps_feeds_the_accumulator_that_often() -> None:
    """Every N-th step's gradient reaches the accumulator, from each context's first step on."""
    import torch

    from neurosim.learning.consolidation import LearningStep
    from neurosim.learning.ewc import EWCConfig, OnlineFisherEWC, OnlineFisherFeed

    for every, expected in ((1, 7), (3, 3), (10, 1)):
        method = OnlineFisherEWC(EWCConfig(lambda_=1.0), OnlineFisherFeed(0.5, every=every))
        method.begin_task("a", {"w": torch.zeros(3)})
        for _ in range(7):
            method.observe(LearningStep({"w": torch.ones(3)}, batch_size=4))
        assert method.accumulator is not None and method.accumulator.stats().steps == expected
        method.close()
    with pytest.raises(ValueError, match="positive integer"):
        OnlineFisherFeed(0.1, every=0)


def test_sampled_label_gradients_estimate_the_true_fisher_without_bias() -> None:
    """B * mean(g)^2 at model-sampled labels averages to the per-sample true Fisher; at fixed
    labels it does not (their mean gradient is not zero)."""
    import torch

    from neurosim.learning.ewc import mean_gradients, sample_labels

    def sampled_label_gradients(logits: torch.Tensor, params: dict[str, torch.Tensor],
                                generator: torch.Generator) -> dict[str, torch.Tensor]:  # fmt: skip
        return mean_gradients(torch.nn.functional.cross_entropy(logits, sample_labels(logits, generator)), params)

    torch.manual_seed(0)
    batch, n_in, n_out = 16, 4, 3
    weight = torch.randn(n_out, n_in, requires_grad=True)
    x = torch.randn(batch, n_in)
    params = {"weight": weight}
    logits = x @ weight.T
    # the exact true Fisher: mean over samples of sum_y p(y|x) (d log p(y|x) / dW)^2
    probs = torch.softmax(logits.detach(), dim=1)
    exact = torch.zeros(n_out, n_in)
    for n in range(batch):
        for y in range(n_out):
            g = (torch.nn.functional.one_hot(torch.tensor(y), n_out) - probs[n])[:, None] * x[n][None, :]
            exact += probs[n, y] * g**2 / batch
    generator = torch.Generator().manual_seed(1)
    draws = 4000
    sampled = sum(batch * sampled_label_gradients(logits, params, generator)["weight"] ** 2 for _ in range(draws))
    assert isinstance(sampled, torch.Tensor)
    estimate = sampled / draws
    assert float(estimate.sum() / exact.sum()) == pytest.approx(1.0, abs=0.05)
    assert torch.allclose(estimate, exact, rtol=0.2, atol=0.02 * float(exact.max()))
    fixed = torch.autograd.grad(torch.nn.functional.cross_entropy(logits, probs.argmin(1)), weight)[0]
    assert float((batch * fixed**2).sum() / exact.sum()) > 1.5  # observed-label cross terms do not cancel


def test_online_true_fisher_is_fed_sampled_label_gradients_end_to_end() -> None:
    import torch

    from benchmarks.continual.protocol import (
        DatasetName,
        Method,
        OnlineFisher,
        ProtocolName,
        RunConfig,
        build_contexts,
        protocol,
        run,
    )
    from neurosim.learning.consolidation import LearningStep
    from neurosim.learning.ewc import EWCConfig, OnlineFisherEWC
    from neurosim.learning.fisher import FisherKind

    proto = protocol(ProtocolName.PERMUTED_DOMAIN_IL, iterations=6, hidden=8)
    contexts = build_contexts(proto, DatasetName.DIGITS)[:2]
    true_fisher = OnlineFisher(0.5, every=3, labels=FisherKind.TRUE)
    cfg = RunConfig(Method.ONLINE_FISHER_EWC, 10.0, online_fisher=true_fisher)
    result = run(proto, contexts, cfg)
    assert len(result.final_accuracy) == 2 and result.fisher_s > 0
    method = OnlineFisherEWC(EWCConfig(lambda_=10.0), true_fisher)  # the step's task gradient is not what it wants
    method.begin_task("a", {"w": torch.zeros(3, requires_grad=True)})
    with pytest.raises(ValueError, match=r"needs prepare\(logits, labels, parameters\)"):
        method.observe(LearningStep({"w": torch.ones(3)}, batch_size=4))
    method.close()
    assert OnlineFisher.from_record(true_fisher.as_record()) == true_fisher
    assert OnlineFisher.from_record({"fisher_alpha": 0.1}) == OnlineFisher(0.1)  # older records: observed labels
    per_sample = OnlineFisher(0.5, every=3, labels=FisherKind.TRUE, per_sample=True)
    result = run(proto, contexts, RunConfig(Method.ONLINE_FISHER_EWC, 10.0, online_fisher=per_sample))
    assert len(result.final_accuracy) == 2 and result.fisher_s > 0
    assert OnlineFisher.from_record(per_sample.as_record()) == per_sample


def test_linear_taps_give_each_samples_own_squared_gradient() -> None:
    """The per-sample squares online-Fisher EWC can feed equal one backward pass per sample."""
    import torch

    from benchmarks.continual.protocol import mlp
    from neurosim.learning.fisher import LinearTaps

    torch.manual_seed(0)
    model = mlp(6, 5, 4)
    taps = LinearTaps(model)
    x, y = torch.randn(7, 6), torch.randint(0, 4, (7,))
    expected = {name: torch.zeros_like(p) for name, p in model.named_parameters()}
    for n in range(7):
        loss = torch.nn.functional.cross_entropy(model(x[n : n + 1]), y[n : n + 1])
        for (name, _), g in zip(model.named_parameters(), torch.autograd.grad(loss, list(model.parameters())),
                                strict=True):  # fmt: skip
            expected[name] += g**2 / 7
    squares = taps.per_sample_squares(torch.nn.functional.cross_entropy(model(x), y), batch_size=7)
    assert squares.keys() == expected.keys()
    for name, value in squares.items():
        torch.testing.assert_close(value, expected[name], msg=name)
    with pytest.raises(ValueError, match="every parameter in an nn"):
        LinearTaps(torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.LayerNorm(2)))


def test_fisher_agreement_compares_online_ema_with_ewcs_fisher(tmp_path: Path) -> None:
    out = tmp_path / "agreement.md"
    command = [sys.executable, "-m", "benchmarks.continual.fisher_agreement", "--dataset", "digits",
               "--protocol", "permuted_domain_il", "--iterations", "60", "--reference-samples", "400"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    feedings = ["0.1:10", "0.05:1", "0.2:2:true", "0.2:2:true:per-sample"]
    done = subprocess.run([*command, "--online", *feedings, "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, env=env, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in out.read_text().splitlines()
             if line.startswith("| ") and not line.startswith("| estimate")]  # fmt: skip
    rows = {c[0]: c[1:] for c in cells}
    assert list(rows) == ["true Fisher, 1000 samples (EWC)", "empirical Fisher, 1000 samples",
                          "online EMA, rate 0.1, every 10 steps", "online EMA, rate 0.05, every 1 steps",
                          "online EMA, rate 0.2, every 2 steps, sampled labels",
                          "online EMA, rate 0.2, every 2 steps, sampled labels, per-sample squares"]  # fmt: skip
    for name, (scale, factor, log_corr, lin_corr, seconds) in rows.items():
        assert float(scale) > 0 and float(factor) == pytest.approx(1 / float(scale), rel=0.01), name
        assert float(log_corr) > 0.5, name  # every estimate ranks parameters as the true Fisher does
        assert -1 <= float(lin_corr) <= 1 and float(seconds) >= 0, name
    # EWC's own estimate is the true Fisher on other samples: the same scale, within sampling noise
    assert 0.7 < float(rows["true Fisher, 1000 samples (EWC)"][0]) < 1.4
    assert out.with_suffix(".png").stat().st_size > 10_000
    bad = subprocess.run([*command, "--online", "0.1"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "expected ALPHA:EVERY" in bad.stderr
    bad = subprocess.run([*command, "--online", "0.1:10:guessed"], cwd=ROOT, capture_output=True, text=True,
                         check=False)  # fmt: skip
    assert bad.returncode == 2 and "empirical|true][:per-sample]" in bad.stderr
