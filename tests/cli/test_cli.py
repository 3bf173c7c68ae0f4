"""The command line: ``python -m fastloss bench`` and ``python -m fastloss info``.

Everything runs on a tiny configuration (sizes of 1e3 elements, the quick timing profile):
these tests check what the commands do and print, not how fast fastloss is (bench/ does).
"""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

import fastloss
import fastloss._registry
from fastloss import __main__ as cli
from fastloss.bench import cases, core, runners
from fastloss._registry import LOSSES

TINY = ["bench", "--quick", "--sizes", "1e3", "--dtypes", "float32", "--threads", "1"]


def run_cli(argv, capsys):
    """main(argv) in this process: (exit code, stdout, stderr)."""
    try:
        code = cli.main(argv)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def run_subprocess(*args, env=None):
    return subprocess.run([sys.executable, "-m", "fastloss", *args], capture_output=True, text=True,
                          timeout=120, env=env)


# --------------------------------------------------------------------------- the tables


def test_every_registry_loss_is_benchmarked():
    """Every registry loss has benchmark variants (its CASES entry, or inputs derived from
    its row) and an always-present baseline, fastloss's own NumPy backend; no table names a
    loss the registry lacks."""
    assert cases.stale_entries() == {name: [] for name in cases.TABLES}
    labels = [v.label for v in cases.variants()]
    assert len(set(labels)) == len(labels)
    rng = np.random.default_rng(2)
    for loss in LOSSES:
        variants = cases.variants_of(loss)
        assert variants and all(v.loss == loss.name for v in variants)
        assert (loss.kind == "classes") == all(v.classes for v in variants)
        assert {v.label for v in variants} <= set(labels)
        x, t = variants[0].make(rng, 1000, np.float64)
        assert runners.NUMPY_BACKEND.runner(variants[0], x, t, 1) is not None, loss.name


def _benchmark_rows(argv, capsys):
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    return out


@pytest.mark.parametrize("table", sorted(cases.TABLES))
def test_a_loss_without_an_entry_is_still_benchmarked(table, monkeypatch, capsys, tmp_path):
    """A loss a table lacks (as a loss added to the registry lacks them all) is benchmarked
    all the same: inputs derived from its registry row without CASES, the competitor absent
    without its entry (PyTorch: torch.nn.functional.<name> when it has one), shown as '-'
    with a note under the loss's header."""
    name = "hinge_loss"  # a loss PyTorch does not have, so no competitor falls back for it
    reduced = dict(cases.TABLES[table])
    del reduced[name]
    monkeypatch.setattr(cases, table, reduced)
    monkeypatch.setitem(cases.TABLES, table, reduced)
    assert cases.missing_entries()[table] == [name]
    assert [v.loss for v in cases.variants([name])] == [name]
    path = tmp_path / "bench.json"
    out = _benchmark_rows(TINY + ["--losses", name, "--against", "numpy,numpy_backend,torch",
                                  "--json", str(path)], capsys)
    data = json.loads(path.read_text())
    rows = data["rows"]
    assert [r["loss"] for r in rows] == [name] and data["mismatches"] == []
    timed = {k for r in rows for k in r["timings"]}
    assert {"fastloss", "fastloss_loss", "numpy_backend"} <= timed
    header = next(line for line in out.splitlines() if line.startswith(f"{name}  ("))
    if table == "CASES":
        assert "inputs from the registry row" in header and "labels -1/+1" in header
    if table == "NUMPY":
        assert "numpy" not in timed and rows[0]["not_timed"]["numpy"] == core.NO_SUCH_LOSS
        assert "not timed ('-'), no such loss: numpy" in out
        assert data["memory"][0]["numpy_bytes"] is None
    if table == "TORCH" and "torch" in data["config"]["compared"]:
        assert "torch" not in timed and "no such loss: torch" in out


def test_a_new_registry_loss_is_benchmarked_without_any_entry(monkeypatch, capsys, tmp_path):
    """A registry loss no table knows: derived inputs, the NumPy backend, and PyTorch's
    torch.nn.functional.<name> (which agrees with fastloss: the same contract)."""
    name = "binary_cross_entropy"  # unit input and target: both derived domains in play
    for table in cases.TABLES:
        reduced = {k: v for k, v in cases.TABLES[table].items() if k != name}
        monkeypatch.setattr(cases, table, reduced)
        monkeypatch.setitem(cases.TABLES, table, reduced)
    path = tmp_path / "bench.json"
    out = _benchmark_rows(TINY + ["--losses", name, "--against", ",".join(runners.BASELINES),
                                  "--json", str(path)], capsys)
    data = json.loads(path.read_text())
    row = data["rows"][0]
    assert row["loss"] == name and data["mismatches"] == []
    assert row["agrees"]["numpy_backend"] is True
    if "torch" in data["config"]["compared"]:
        assert row["agrees"]["torch"] is True  # torch.nn.functional.binary_cross_entropy
    for key in ("numpy", "sklearn"):
        if key in data["config"]["compared"]:
            assert row["not_timed"][key] == core.NO_SUCH_LOSS
    assert "inputs from the registry row" in out


@pytest.mark.parametrize("loss", [spec.name for spec in LOSSES])
def test_derived_inputs_respect_the_domains(loss):
    """The inputs derived from a registry row are valid for the loss: probabilities in
    (0.01, 0.99) for a "unit" input, labels 0/1 or -1/+1 for "unit" / "sign" targets,
    exp(N(0, 1)) (a quarter of them 0 for "nonnegative") for "positive" / "nonnegative" ones,
    |N(0, 1)| without a domain,
    int64 class indices in [0, 10) for class losses; fastloss and its NumPy backend take
    them and agree."""
    spec = fastloss._registry.BY_NAME[loss]
    variant = cases.derived_variant(spec)
    assert variant.loss == loss and "registry row" in variant.describe
    rng = np.random.default_rng(3)
    for dtype in (np.float32, np.float64):
        x, t = variant.make(rng, 10_000, dtype)
        assert x.dtype == dtype and np.isfinite(x).all()
        if spec.kind == "classes":
            assert variant.classes == cases.DERIVED_CLASSES == 10
            assert x.shape == (1000, 10) and t.dtype == np.int64 and t.shape == (1000,)
            assert t.min() >= 0 and t.max() < 10
        else:
            assert variant.classes is None and x.shape == t.shape == (10_000,) and t.dtype == dtype
            if spec.input_domain == "unit":
                assert x.min() >= 0.01 - 1e-6 and x.max() <= 0.99 + 1e-6
            if spec.target_domain == "unit":
                assert set(np.unique(t)) == {0, 1}
            elif spec.target_domain == "sign":
                assert set(np.unique(t)) == {-1, 1}
            elif spec.target_domain in ("nonnegative", "positive"):
                assert t.min() >= 0 and (t.min() > 0) == (spec.target_domain == "positive")
                assert len(np.unique(t)) > 100
            else:
                assert len(np.unique(t)) > 100 and t.min() >= 0  # |N(0, 1)|
        reference = runners.FASTLOSS.runner(variant, x, t, 1).result()
        assert np.isfinite(reference[0]) and np.isfinite(reference[1]).all()
        other = runners.NUMPY_BACKEND.runner(variant, x, t, 1).result()
        assert runners.agrees(reference, other, dtype), loss


def test_spec_inputs():
    """The inputs the brief asks for: int64 class indices with C=10 and 1000, log-probabilities
    for nll, probabilities in (0.01, 0.99) for BCE, +-1 labels for the hinges."""
    rng = np.random.default_rng(0)
    assert [v.classes for v in cases.CASES["cross_entropy"]] == [10, 1000]
    assert [v.classes for v in cases.CASES["multi_margin_loss"]] == [10]
    for variant in cases.variants():
        for dtype in (np.float32, np.float64):
            x, t = variant.make(rng, 10_000, dtype)
            assert x.dtype == dtype and x.size == 10_000
            if variant.classes:
                assert x.shape == (10_000 // variant.classes, variant.classes)
                assert t.dtype == np.int64 and t.shape == (x.shape[0],)
                assert t.min() >= 0 and t.max() < variant.classes
            else:
                assert t.dtype == dtype and t.shape == x.shape
    x, _ = cases.CASES["nll_loss"][0].make(rng, 1000, np.float64)
    assert np.allclose(np.exp(x).sum(axis=1), 1.0)
    x, t = cases.CASES["binary_cross_entropy"][0].make(rng, 10_000, np.float32)
    assert x.min() > 0.01 - 1e-6 and x.max() < 0.99 + 1e-6 and set(np.unique(t)) <= {0, 1}
    for name in ("hinge_loss", "squared_hinge_loss"):
        _, t = cases.CASES[name][0].make(rng, 1000, np.float64)
        assert set(np.unique(t)) == {-1.0, 1.0}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_baseline_computes_fastloss_result(dtype):
    """Speed-ups are only meaningful for the same loss and gradient: every baseline that is
    installed agrees with fastloss on every loss (the bench checks this too, row by row)."""
    loaded, _ = runners.load_competitors(runners.BASELINES)
    rng = np.random.default_rng(1)
    for variant in cases.variants():
        x, t = variant.make(rng, 2000, dtype)
        reference = runners.FASTLOSS.runner(variant, x, t, 1).result()
        for competitor in loaded:
            runner = competitor.runner(variant, x, t, 1)
            if runner is None:
                assert competitor.key == "sklearn" and cases.SKLEARN[variant.loss] is None
                continue
            got = runner.result()
            assert runners.agrees(reference, got, dtype), (variant.label, competitor.key)
        # and a wrong result is caught
        loss, grad = reference
        assert not runners.agrees(reference, (2 * loss, grad), dtype)
        assert not runners.agrees(reference, (loss, 2 * grad), dtype)


# --------------------------------------------------------------------------- info


def test_info():
    result = run_subprocess("info")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"fastloss {fastloss.__version__}" in out
    assert f"backend      {fastloss.get_backend()}" in out
    assert f"threads per call: {fastloss.get_num_threads()}" in out
    assert "OpenMP" in out and "SIMD level" in out
    assert f"NumPy        {np.__version__}" in out
    assert f"Python       {sys.version.split()[0]}" in out
    for name in ("Cython", "torch"):
        assert name in out
    if fastloss.get_backend() == "cython":
        from fastloss import kernels as _kernels

        assert ("on" if _kernels.openmp_enabled() else "off") in out
        assert _kernels.simd_level() in out


# --------------------------------------------------------------------------- bench


def test_bench_json_and_table(tmp_path, capsys):
    path = tmp_path / "bench.json"
    code, out, err = run_cli(
        ["bench", "--quick", "--losses", "mse_loss,nll_loss", "--sizes", "1e3",
         "--dtypes", "float32,float64", "--threads", "1,2", "--against", "numpy,numpy_backend",
         "--json", str(path)], capsys)
    assert code == 0, err
    data = json.loads(path.read_text())

    m = data["machine"]
    for key in ("cpu_model", "cores", "usable_cores", "python", "numpy", "cython", "fastloss",
                "backend", "openmp", "simd", "default_threads", "torch", "sklearn", "jax",
                "other_load_cpus"):
        assert key in m
    assert m["fastloss"] == fastloss.__version__ and m["backend"] == fastloss.get_backend()
    assert m["numpy"] == np.__version__ and m["cores"] == os.cpu_count()
    bw = data["bandwidth"]
    for kind in ("add_gb_per_s", "copy_gb_per_s"):
        assert set(bw[kind]) == {"1", "2"} and all(v > 0 for v in bw[kind].values())
    assert bw["elements"] >= 10_000_000

    rows = data["rows"]
    labels = ["mse_loss", "nll_loss C=10"]
    assert data["config"]["losses"] == labels
    assert [(r["loss"], r["dtype"], r["threads"]) for r in rows] == [
        (name, d, thr) for name in labels for d in ("float32", "float64") for thr in (1, 2)]
    for r in rows:
        assert r["elements"] == 1000
        itemsize = 4 if r["dtype"] == "float32" else 8
        targets = 8 * (1000 // r["classes"]) if r["classes"] else itemsize * 1000
        assert r["bytes"] == 2 * 1000 * itemsize + targets
        # a row of 2 threads also times the fused call on 1 thread, beside it
        one_thread = {"fastloss_1thread"} if r["threads"] > 1 else set()
        assert set(r["timings"]) == {"fastloss", "fastloss_loss", "numpy", "numpy_backend"} | one_thread
        for t in r["timings"].values():
            assert 0 < t["min_s"] <= t["q1_s"] <= t["median_s"] <= t["q3_s"] <= t["max_s"]
            assert t["samples"] >= 3 and t["calls_per_sample"] >= 1
        median = r["timings"]["fastloss"]["median_s"]
        assert math.isclose(r["elements_per_s"], 1000 / median)
        assert math.isclose(r["gb_per_s"], r["bytes"] / median / 1e9)
        kind = "copy" if r["classes"] else "add"
        assert r["bandwidth_kind"] == kind
        assert math.isclose(r["bandwidth_share"], r["gb_per_s"] / bw[kind + "_gb_per_s"][str(r["threads"])])
        for key, ratio in r["speedup"].items():
            assert math.isclose(ratio, r["timings"][key]["median_s"] / median)
        assert r["agrees"] == {"numpy": True, "numpy_backend": True}
    assert data["mismatches"] == []

    # memory: measured per loss, size and dtype
    assert [(e["loss"], e["dtype"]) for e in data["memory"]] == [
        (name, d) for name in labels for d in ("float32", "float64")]
    for e in data["memory"]:
        if m["backend"] == "cython":  # the compiled kernels: nothing input-sized with out=
            assert e["fastloss_out_bytes"] < e["input_bytes"] // 2
        else:  # FASTLOSS_BACKEND=numpy: the NumPy backend computes with input-sized temporaries
            assert e["fastloss_out_bytes"] >= e["input_bytes"]
        assert e["fastloss_bytes"] >= e["input_bytes"]  # the returned gradient
        assert e["numpy_bytes"] > e["input_bytes"]  # plain NumPy makes temporaries

    # the table: header facts, legend, one group per loss with aligned rows
    assert f"machine    {m['cpu_model']}" in out
    assert "threads per row: 1, 2" in out and "bandwidth  measured" in out
    assert f"backend {m['backend']}" in out and "SIMD" in out
    for column in ("fused", "IQR", "loss only", "Gel/s", "GB/s", "%BW", "vs numpy", "vs np-backend"):
        assert column in out
    for name in labels:
        assert f"\n{name}  (" in out
    table_lines = [line for line in out.splitlines() if line.startswith("  1e3")]
    assert len(table_lines) == len(rows)
    assert len({line.index("|") for line in table_lines}) == 1  # aligned
    assert "Peak extra memory" in out
    assert f"wrote {path}" in out
    assert "measuring memory bandwidth" in err and "\r" not in err  # stderr is no TTY here
    assert "|" not in err


def test_quick_defaults_and_overrides():
    cores = core.usable_cores()
    quick = core.Config(quick=True)
    assert quick.plan() == [(1000, "float32"), (100_000, "float32"), (10_000_000, "float32")]
    assert quick.thread_counts() == (cores,)
    assert quick.baselines() == ("numpy", "numpy_backend", "torch")
    assert quick.profile is core.QUICK
    full = core.Config()
    assert full.plan() == [(n, d) for n in (10**3, 10**4, 10**5, 10**6, 10**7) for d in ("float32", "float64")]
    assert full.thread_counts() == ((1, cores) if cores > 1 else (1,))
    assert full.baselines() == runners.BASELINES
    overridden = core.Config(quick=True, sizes=(5000,), dtypes=("float64",), threads=(1,), against=("numpy",))
    assert overridden.plan() == [(5000, "float64")]
    assert overridden.thread_counts() == (1,) and overridden.baselines() == ("numpy",)


def test_options_parse():
    args = cli.build_parser().parse_args(
        ["bench", "--quick", "--losses", "mse_loss,nll_loss", "--sizes", "1e3,100000,1_000",
         "--dtypes", "f32,float64", "--threads", "1,2", "--against", "numpy,torch",
         "--json", "a.json", "--plot", "a.png"])
    assert args.quick and args.losses == ("mse_loss", "nll_loss")
    assert args.sizes == (1000, 100_000) and args.dtypes == ("float32", "float64")
    assert args.threads == (1, 2) and args.against == ("numpy", "torch")
    assert args.json_path == "a.json" and args.plot_path == "a.png"


def test_a_competitor_not_installed_is_skipped(monkeypatch, capsys):
    for name in ("torch", "jax", "sklearn"):
        monkeypatch.setitem(sys.modules, name, None)  # import now fails, as if not installed
    code, out, err = run_cli(TINY + ["--losses", "hinge_loss", "--against", "numpy,torch,jax,sklearn"], capsys)
    assert code == 0, err
    for name in ("torch", "jax", "sklearn"):
        assert f"skipped    {name}: not installed" in out
    assert "vs numpy" in out and "vs torch" not in out and "Traceback" not in err


def test_slower_rows_are_shown_as_such():
    """Honesty: a speed-up below 1 is printed as it is, as is a baseline that disagrees."""
    timing = {"median_s": 2e-6, "q1_s": 1.9e-6, "q3_s": 2.1e-6, "min_s": 1.8e-6, "max_s": 3e-6,
              "samples": 5, "calls_per_sample": 10}
    faster = dict(timing, median_s=1e-6)
    row = {"loss": "mse_loss", "elements": 1000, "dtype": "float32", "threads": 1, "bytes": 12000,
           "classes": None, "timings": {"fastloss": timing, "fastloss_loss": timing, "numpy": faster,
                                        "torch": faster},
           "elements_per_s": 5e8, "gb_per_s": 6.0, "bandwidth_kind": "add", "bandwidth_share": 0.2,
           "speedup": {"numpy": 0.5, "torch": 0.5}, "agrees": {"numpy": True, "torch": False},
           "not_timed": {}}
    result = {"machine": {"fastloss": "0", "cpu_model": "CPU", "cores": 2, "usable_cores": 2,
                          "backend": "cython", "simd": "AVX2", "openmp": True, "python": "3", "default_threads": 1,
                          "numpy": "2"},
              "bandwidth": {"add_gb_per_s": {"1": 30.0}, "copy_gb_per_s": {"1": 30.0},
                            "elements": 10**7, "repeats": 9},
              "config": {"threads": [1], "compared": ["numpy", "torch"], "skipped": {}},
              "competitors": {"numpy": {"label": "numpy", "what": "w"}, "torch": {"label": "torch", "what": "w"}},
              "command": "python -m fastloss bench", "rows": [row], "memory": [],
              "mismatches": ["mse_loss n=1000 float32: torch"], "wall_time_s": 1.0}
    text = core.format_report(result)
    line = next(s for s in text.splitlines() if s.startswith("  1e3"))
    assert "0.50x" in line and "0.50x!" in line
    assert "WARNING: these baselines do not compute" in text


def test_progress_bar_only_on_a_terminal():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    tty, pipe = Tty(), io.StringIO()
    for stream in (tty, pipe):
        progress = core.Progress(2, stream)
        progress.status("measuring")
        progress.row("mse_loss n=1e3")
        progress.row("mse_loss n=1e5")
        progress.loss_done("mse_loss", 2, 0.5)
        progress.close()
    assert "\r" in tty.getvalue() and "2/2" in tty.getvalue() and "#" in tty.getvalue()
    assert tty.getvalue().endswith("\r")  # the bar is erased at the end
    assert "\r" not in pipe.getvalue()
    assert pipe.getvalue().splitlines() == ["fastloss bench: measuring", "fastloss bench: mse_loss: 2 rows in 0.5 s"]


def test_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="--plot needs matplotlib, which is not installed")
    path = tmp_path / "bench.png"
    code, out, err = run_cli(TINY + ["--losses", "cross_entropy", "--sizes", "1e3,2e3",
                                     "--against", "numpy", "--plot", str(path)], capsys)
    assert code == 0, err
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert f"wrote {path}" in out


def test_plot_without_matplotlib(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code, out, err = run_cli(TINY + ["--plot", str(tmp_path / "x.png")], capsys)
    assert code == 2 and "usage:" in err and "--plot needs matplotlib" in err
    assert out == "" and not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("argv, message", [
    ([], "the following arguments are required"),
    (["nope"], "invalid choice"),
    (["bench", "--bogus"], "unrecognized arguments: --bogus"),
    (["bench", "--losses", "mse_loss,not_a_loss"], "unknown loss 'not_a_loss'; choose from: mse_loss"),
    (["bench", "--losses", ""], "empty"),
    (["bench", "--sizes", "abc"], "sizes must be whole numbers"),
    (["bench", "--sizes", "0"], "sizes must be whole numbers"),
    (["bench", "--sizes", "1.5"], "sizes must be whole numbers"),
    (["bench", "--dtypes", "float16"], "dtypes are float32 and float64"),
    (["bench", "--threads", "0"], "threads must be positive integers"),
    (["bench", "--threads", "two"], "threads must be positive integers"),
    (["bench", "--against", "tensorflow"], "unknown baseline 'tensorflow'"),
    (["bench", "--json"], "expected one argument"),
    (["bench", "--plot", "out.txt"], "must end with .png"),
    (["bench", "--json", "/nonexistent/dir/b.json"], "does not exist"),
    (["info", "--quick"], "unrecognized arguments"),
    (["bench", "--load", "-1"], "--load takes a number of busy processes from 0 to 256, got '-1'"),
    (["bench", "--load", "many"], "--load takes a number of busy processes from 0 to 256, got 'many'"),
    (["bench", "--simd", "sse9"], "--simd"),
])
def test_bad_options(argv, message, capsys):
    code, out, err = run_cli(argv, capsys)
    assert code == 2
    assert "usage: python -m fastloss" in err and message in err
    assert out == ""


def test_bad_options_from_the_shell():
    result = run_subprocess("bench", "--losses", "not_a_loss")
    assert result.returncode == 2
    assert result.stderr.startswith("usage: python -m fastloss bench")
    assert "unknown loss 'not_a_loss'" in result.stderr and result.stdout == ""
    result = run_subprocess("bench", "--quick", "--sizes", "x")
    assert result.returncode == 2 and "--sizes" in result.stderr


def test_help_lists_every_option(capsys):
    code, out, _ = run_cli(["bench", "--help"], capsys)
    assert code == 0
    for option in ("--quick", "--losses", "--sizes", "--dtypes", "--threads", "--against", "--json", "--plot",
                   "--load", "--simd"):
        assert option in out


def test_load_runs_busy_processes_beside_the_bench(capsys, tmp_path):
    """--load N: N busy processes for the whole run, said in the report and the JSON."""
    path = tmp_path / "b.json"
    code, out, _ = run_cli(TINY + ["--losses", "mse_loss", "--against", "numpy", "--load", "2",
                                   "--json", str(path)], capsys)
    assert code == 0
    assert "2 of them busy processes started by --load" in out
    import json

    machine = json.loads(path.read_text())["machine"]
    assert machine["synthetic_load"] == 2
    assert machine["other_load_cpus"]["before"] > 1.0  # they were busy while it measured


def test_thread_scaling_is_the_ratio_of_the_rows_timed_with_1_and_more_threads(capsys, tmp_path):
    """Issue 16: a row with more than one thread also times the same fused call at 1 thread,
    interleaved with it (timings fastloss_1thread; vs_one_thread, the median of paired sample
    ratios); the report ends with those ratios per loss (JSON thread_scaling) and the worst."""
    path = tmp_path / "b.json"
    argv = ["bench", "--quick", "--sizes", "1e3,1e5", "--dtypes", "float32", "--threads", "1,2",
            "--losses", "mse_loss,cross_entropy", "--against", "numpy", "--json", str(path)]
    code, out, _ = run_cli(argv, capsys)
    assert code == 0
    import json

    data = json.loads(path.read_text())
    rows = {(r["loss"], r["elements"], r["threads"]): r for r in data["rows"]}
    for (loss, n, thr), r in rows.items():
        if thr == 1:
            assert "fastloss_1thread" not in r["timings"] and r["vs_one_thread"] is None
        else:
            ratio = r["vs_one_thread"]
            assert ratio == r["timings"]["fastloss"]["paired_median_ratio"] and ratio > 0
            assert "fastloss_1thread" not in r["speedup"]
    scaling = data["thread_scaling"]
    assert sorted((e["loss"], e["elements"]) for e in scaling) == sorted({(loss, n) for loss, n, _ in rows})
    for e in scaling:
        assert e["threads"] == 2 and e["ratio"] == rows[(e["loss"], e["elements"], 2)]["vs_one_thread"]
    worst = max(scaling, key=lambda e: e["ratio"])
    assert "Threads: fused time at 2 threads / at 1 thread" in out
    assert f"worst {worst['ratio']:.2f}x ({worst['loss']}" in out
    # one thread count: nothing to compare, no section
    code, out, _ = run_cli(TINY + ["--losses", "mse_loss", "--against", "numpy"], capsys)
    assert code == 0 and "Threads: fused time" not in out


def test_simd_levels_are_timed_side_by_side(capsys, tmp_path, monkeypatch):
    """Issue 16, point 2: --simd times the fused call at each instruction-set level this CPU
    runs, interleaved in each row (kernels._set_simd_cap before every sample, the detected
    level again afterwards); JSON simd_levels per row and a report section. Without the
    compiled backend the option is refused."""
    from fastloss.bench.core import simd_levels_available

    levels = simd_levels_available()
    if not levels:
        code, _, err = run_cli(TINY + ["--simd", "all"], capsys)
        assert code == 2 and "--simd needs the compiled backend" in err
        return
    from fastloss import kernels

    detected = kernels.simd_level()
    set_cap, seen = kernels._set_simd_cap, []

    def recording(level):
        set_cap(level)
        seen.append((level, kernels.simd_level()))

    monkeypatch.setattr(kernels, "_set_simd_cap", recording)
    path = tmp_path / "b.json"
    code, out, _ = run_cli(TINY + ["--losses", "mse_loss,cross_entropy", "--against", "numpy", "--simd", "all",
                                   "--json", str(path)], capsys)
    assert code == 0
    import json

    data = json.loads(path.read_text())
    assert data["config"]["simd_levels"] == list(levels)
    for r in data["rows"]:
        assert sorted(r["simd_levels"]) == sorted(levels) and all(v > 0 for v in r["simd_levels"].values())
        assert not any(k.startswith("fastloss@") for k in r["speedup"])
    assert "SIMD levels: the fused call at each level" in out
    # every level was set (and was the level the kernels then ran at), then the detected one
    names = {"baseline": "baseline", "avx2": "AVX2", "avx512": "AVX-512"}
    assert {lv for lv, _ in seen if lv} == set(levels)
    assert all(now.startswith(names[lv]) for lv, now in seen if lv)
    assert seen[-1] == (None, detected) and kernels.simd_level() == detected
    with pytest.raises(ValueError, match="level must be one of"):
        set_cap("sse9")


def test_load_processes_end_with_the_run_and_with_a_killed_parent():
    with core.synthetic_load(2) as procs:
        assert len(procs) == 2 and all(p.poll() is None for p in procs)
    assert all(p.poll() is not None for p in procs)
    # a bench killed outright (no finally) leaves no spinning orphan: each checks its parent
    script = ("import sys, os; sys.path[:0] = sys.argv[1:]; from fastloss.bench import core\n"
              "ctx = core.synthetic_load(1); procs = ctx.__enter__(); print(procs[0].pid, flush=True); os._exit(0)")
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    pid = int(child.stdout.split()[0])
    import time

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
        time.sleep(0.1)
    assert not os.path.exists(f"/proc/{pid}") or "Z" in open(f"/proc/{pid}/stat").read().split()[2]


def test_api_prints_the_installed_reference(capsys):
    """`python -m fastloss api` prints the API reference installed with the package (a copy
    of docs/API.md with its generated tables), so every docstring's citation resolves in an
    installed wheel too."""
    assert cli.main(["api"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("<!-- GENERATED") and "# fastloss API reference" in text
    for spec in LOSSES:
        assert f"#### `{spec.name}` / `{spec.name}_grad`" in text, spec.name


def test_the_pytorch_adapter_is_timed_against_torch(capsys, tmp_path):
    """--against torch,torch_adapter (issue 14, point 4): fastloss.torch forward + backward,
    checked to agree with fastloss, and its speed-up over torch.nn.functional in its own
    column; fastloss's default thread count is restored after the run."""
    pytest.importorskip("torch", exc_type=ImportError)
    previous = runners.fastloss_threads()
    path = tmp_path / "bench.json"
    out = _benchmark_rows(TINY + ["--losses", "mse_loss,cross_entropy", "--against", "torch,torch_adapter",
                                  "--json", str(path)], capsys)
    assert runners.fastloss_threads() == previous
    data = json.loads(path.read_text())
    assert data["mismatches"] == [] and data["rows"]
    for r in data["rows"]:
        assert r["agrees"] == {"torch": True, "torch_adapter": True}
        assert math.isclose(r["torch_adapter_vs_torch"],
                            r["timings"]["torch"]["median_s"] / r["timings"]["torch_adapter"]["median_s"])
    assert "flt.torch vs torch" in out and "vs fastloss.torch" in out
    # without both baselines: no such column, and the field is None
    path2 = tmp_path / "bench2.json"
    out = _benchmark_rows(TINY + ["--losses", "mse_loss", "--against", "torch_adapter", "--json", str(path2)], capsys)
    assert "flt.torch vs torch" not in out
    assert json.loads(path2.read_text())["rows"][0]["torch_adapter_vs_torch"] is None


def test_config_prints_the_flags_of_the_packaged_c_library(capsys):
    import fastloss

    code, out, _ = run_cli(["config", "--cflags", "--libs", "--modversion"], capsys)
    assert code == 0
    libdir = os.path.dirname(fastloss.get_library())
    assert out.split() == [fastloss.__version__, f"-I{fastloss.get_include()}", f"-L{libdir}",
                           f"-Wl,-rpath,{libdir}", "-lfastloss"]
    assert os.path.exists(os.path.join(fastloss.get_include(), "libfastloss.h"))


def test_config_without_the_library_is_an_error(capsys, monkeypatch):
    import fastloss

    def missing():
        raise FileNotFoundError("/x/lib/libfastloss.so does not exist: built without its C library")

    monkeypatch.setattr(fastloss, "get_library", missing)
    code, out, err = run_cli(["config", "--libs"], capsys)
    assert code == 1 and out == "" and "does not exist" in err


def test_paired_ratio_is_the_median_of_same_round_ratios(monkeypatch):
    """time_interleaved's pair=(a, b): the median over rounds of a's sample / b's sample of
    the same round. On a fake clock, b costs 4x a and every other stretch of calls runs 3x
    slower for both (a process sharing a core): the paired ratio is 1/4 (up to the samples
    that straddle a change of pace)."""
    clock = {"now": 0.0, "calls": 0}

    def tick(cost):
        clock["calls"] += 1
        clock["now"] += cost * (3.0 if (clock["calls"] // 7) % 2 else 1.0)

    monkeypatch.setattr(core.time, "perf_counter", lambda: clock["now"])
    profile = core.Profile(sample_s=1e-3, min_samples=9, max_samples=9, budget_s=1e-2, verify_max=0)
    stats = core.time_interleaved({"a": lambda: tick(1e-5), "b": lambda: tick(4e-5)}, profile, pair=("a", "b"))
    assert stats["a"]["paired_median_ratio"] == pytest.approx(0.25, rel=0.01)
    assert "paired_median_ratio" not in stats["b"]


def test_quick_samples_a_slow_call_once(monkeypatch):
    """--quick (issue 16, point 6): a call whose warm-up took over Profile.slow_call_s is
    sampled once (the NumPy backend's deviances at 1e7 take seconds); others keep at least
    min_samples. The full profile samples every call at least min_samples times."""
    clock = {"now": 0.0}
    monkeypatch.setattr(core.time, "perf_counter", lambda: clock["now"])

    def cost(seconds):
        def call():
            clock["now"] += seconds
        return call

    calls = {"slow": cost(2.0), "fast": cost(1e-4)}
    quick = core.time_interleaved(calls, core.QUICK)
    assert quick["slow"]["samples"] == 1 and quick["fast"]["samples"] >= core.QUICK.min_samples
    full = core.time_interleaved(calls, core.FULL)
    assert full["slow"]["samples"] == core.FULL.min_samples
