"""``python -m fastloss bench``: fastloss against the code it replaces, on this machine (and
the facts ``python -m fastloss info`` shows).

What is measured
----------------
For every loss of the registry (``fastloss._registry.LOSSES``; inputs and baselines from
``fastloss.bench.cases``), every size, dtype and thread count of the run, one *row*:

* fastloss's fused ``NAME_grad(x, t, n_threads=thr, out=buf)`` and the loss alone ``NAME``;
* the baselines (``fastloss.bench.runners``): the plain NumPy code a user would write,
  fastloss's own NumPy backend, PyTorch forward + backward, scikit-learn's ``_loss``,
  JAX ``jit(value_and_grad)``, those that are installed;
* before timing, on inputs up to ``Profile.verify_max`` elements, every baseline's loss and
  gradient are checked against fastloss's: a speed-up is only meaningful for the same result.

Timing: ``time.perf_counter``; each implementation is called once to warm up, then sampled
repeatedly, each sample timing a loop of k calls (k chosen so that a sample lasts about
``Profile.sample_s``: tiny inputs are not measured at the clock's resolution); the number of
samples adapts to the call's cost within ``[min_samples, max_samples]`` (``--quick``: a call
slower than ``Profile.slow_call_s``, 0.5 s, is sampled once after its warm-up). The samples of all
implementations of a row are taken *interleaved* (round-robin, rotating the order), so a
background load hits them alike; the garbage collector is off while timing. A row reports
the median and the interquartile range; speed-ups are ratios of medians of the same row.

Bandwidth: ``np.add(a, b, out=c)`` (read 2 arrays, write 1) and ``np.copyto`` (read 1,
write 1) over 1e7 float64, split over the row's thread count with Python threads (NumPy
releases the GIL), median of several: the bytes-moving speed a fused loss + gradient pass
can at best reach. A row's GB/s counts the bytes the fused kernel must move (read input and
target, write the gradient; int64 for class indices) and its share of that bandwidth
(np.add for elementwise losses, np.copyto for class losses, whose target is small).

Memory: the peak of ``tracemalloc`` (NumPy reports its data allocations to it; fastloss
allocates through NumPy) over one call, minus what was allocated before: what one call
costs in memory, including the returned gradient when there is no ``out=``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import importlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from . import cases
from . import runners

SCHEMA = 1


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class Profile:
    """How long to measure: per row and implementation."""

    sample_s: float  # target duration of one sample (a loop of k calls)
    min_samples: int
    max_samples: int
    budget_s: float  # time per implementation per row, within [min, max] samples
    verify_max: int = 1_000_000  # check results against fastloss up to this many elements
    # A call slower than this (its warm-up call's time) is sampled once: the NumPy backend's
    # deviances take 4-12 s at 1e7, and 3 samples of them were most of --quick's time.
    slow_call_s: float = math.inf


FULL = Profile(sample_s=2e-3, min_samples=5, max_samples=31, budget_s=0.4)
QUICK = Profile(sample_s=1e-3, min_samples=3, max_samples=11, budget_s=0.06, slow_call_s=0.5)

DTYPES = {"float32": np.float32, "float64": np.float64}
DEFAULT_SIZES = (1_000, 10_000, 100_000, 1_000_000, 10_000_000)
QUICK_SIZES = (1_000, 100_000, 10_000_000)
DEFAULT_AGAINST = runners.BASELINES
QUICK_AGAINST = ("numpy", "numpy_backend", "torch")


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@dataclass
class Config:
    losses: tuple[str, ...] | None = None  # registry names; None = all
    sizes: tuple[int, ...] | None = None
    dtypes: tuple[str, ...] | None = None
    threads: tuple[int, ...] | None = None
    against: tuple[str, ...] | None = None
    quick: bool = False
    json_path: str | None = None
    plot_path: str | None = None
    seed: int = 0
    load: int = 0  # --load N: N busy processes beside the run (the contended case)
    simd: tuple[str, ...] | None = None  # --simd: instruction-set levels timed side by side
    command: str = ""  # the command line, for the report
    profile: Profile = field(init=False)

    def __post_init__(self):
        self.profile = QUICK if self.quick else FULL
        if self.load:
            # Busy processes beside the run preempt it every few milliseconds: samples a
            # quarter as long, three times as many (the same time per row), so most samples
            # fall between two preemptions and the medians and paired ratios hold. Measured
            # with --load 2: ratios of identical serial calls (1e3 elements, 1 vs 2 threads)
            # reached 2.6x with 2 ms samples.
            self.profile = dataclasses.replace(self.profile, sample_s=self.profile.sample_s / 4,
                                               max_samples=3 * self.profile.max_samples)

    def plan(self) -> list[tuple[int, str]]:
        """The (size, dtype) pairs of the run."""
        sizes = self.sizes or (QUICK_SIZES if self.quick else DEFAULT_SIZES)
        dtypes = self.dtypes or (("float32",) if self.quick else tuple(DTYPES))
        # --quick stays in float32: 1e7 in float64 too would take it past a minute on a
        # 2-core machine (measured: 72 s with one core busy elsewhere)
        return [(n, d) for n in sizes for d in dtypes]

    def thread_counts(self) -> tuple[int, ...]:
        if self.threads:
            return self.threads
        cores = usable_cores()
        return (cores,) if self.quick or cores == 1 else (1, cores)

    def baselines(self) -> tuple[str, ...]:
        return self.against or (QUICK_AGAINST if self.quick else DEFAULT_AGAINST)


# --------------------------------------------------------------------------- machine facts


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _version(module_name):
    try:
        return importlib.import_module(module_name).__version__
    except Exception:
        return None


def _installed_version(dist):
    """A distribution's version from its metadata (no import: fast), or None."""
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def backend_facts() -> dict:
    import fastloss

    facts = {"fastloss": fastloss.__version__, "backend": fastloss.get_backend(),
             "openmp": None, "simd": None, "default_threads": fastloss.get_num_threads()}
    try:
        from .. import kernels as _kernels
    except ImportError:
        return facts
    facts["openmp"] = bool(_kernels.openmp_enabled())
    facts["simd"] = _kernels.simd_level()
    return facts


def machine_facts(loaded) -> dict:
    facts = {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cython": _version("Cython"),
    }
    facts.update(backend_facts())
    # the versions of the baselines: as imported when compared, else as installed (or None)
    versions = {c.key: c.version for c in loaded}
    for key, dist in (("torch", "torch"), ("sklearn", "scikit-learn"), ("jax", "jax")):
        facts[key] = versions.get(key) or _installed_version(dist)
    return facts


# --------------------------------------------------------------------------- measurement


def _cpu_times():
    """(busy, total) jiffies of all CPUs from /proc/stat, or None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


def other_load(seconds=0.15):
    """How many CPUs other processes keep busy: /proc/stat sampled while this process
    sleeps. None when unknown. On a busy machine timings vary more and a multi-threaded
    call gets less than a core per thread."""
    def own():  # this process's CPU time in jiffies: accounted late, so it can land here
        t = os.times()
        return (t.user + t.system) * os.sysconf("SC_CLK_TCK")

    before = _cpu_times()
    if before is None:
        return None
    own_before = own()
    time.sleep(seconds)
    after, own_after = _cpu_times(), own()
    if after is None or after[1] <= before[1]:
        return None
    busy = max(0.0, after[0] - before[0] - (own_after - own_before))
    return busy / (after[1] - before[1]) * (os.cpu_count() or 1)


# One busy process of --load: a pure-Python spin that ends when its parent does (even when the
# bench is killed: it checks its parent every few milliseconds), niceness unchanged.
_SPIN = ("import os\nparent = os.getppid()\nwhile os.getppid() == parent:\n"
         "    for _ in range(100000):\n        pass\n")


@contextlib.contextmanager
def synthetic_load(n: int):
    """``--load N``: N processes that keep a CPU busy each for the whole run, the contended case
    users' machines are in (a browser, data-loading workers, a shared CI runner). N = the
    number of cores shares every core with one other runnable process."""
    procs = []
    try:
        for _ in range(n):
            procs.append(subprocess.Popen([sys.executable, "-c", _SPIN], stdin=subprocess.DEVNULL,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        if procs:
            time.sleep(0.3)  # started and spinning before anything is measured
        yield procs
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()


def _median(values):
    return statistics.median(values)


def _quartiles(values):
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


def _run_split(fn, chunks, pool):
    if pool is None:
        for args in chunks:
            fn(*args)
    else:
        for future in [pool.submit(fn, *args) for args in chunks]:
            future.result()


def measure_bandwidth(thread_counts, n=10_000_000, repeats=15) -> dict:
    """GB/s of np.add (read 2, write 1) and np.copyto (read 1, write 1) over n float64,
    split in equal chunks over each thread count: {"add": {threads: GB/s}, "copy": {...}}."""
    a = np.ones(n)
    b = np.ones(n)
    c = np.zeros(n)  # touched: no first-touch page faults in the measurement
    result = {"add": {}, "copy": {}, "add_range": {}, "copy_range": {}, "elements": n,
              "dtype": "float64", "repeats": repeats}
    for threads in thread_counts:
        bounds = np.linspace(0, n, threads + 1).astype(int)
        parts = [slice(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:])]
        pool = ThreadPoolExecutor(threads) if threads > 1 else None
        try:
            for kind, fn, chunks, nbytes in (
                ("add", lambda x, y, z: np.add(x, y, out=z), [(a[s], b[s], c[s]) for s in parts], 24 * n),
                ("copy", lambda x, z: np.copyto(z, x), [(a[s], c[s]) for s in parts], 16 * n),
            ):
                _run_split(fn, chunks, pool)  # warm-up (and thread start-up)
                times = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    _run_split(fn, chunks, pool)
                    times.append(time.perf_counter() - t0)
                result[kind][threads] = nbytes / _median(times) / 1e9
                result[kind + "_range"][threads] = [nbytes / max(times) / 1e9, nbytes / min(times) / 1e9]
        finally:
            if pool is not None:
                pool.shutdown()
    return result


def peak_extra_bytes(call, warm_up=True) -> int:
    """Peak memory allocated during one call (through NumPy or Python), measured by
    tracemalloc, after a warm-up call (skip it when the code already ran: the bench measures
    memory after timing). Includes the result the call returns."""
    if warm_up:
        call()
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        result = call()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    del result
    return max(0, peak - base)


def time_interleaved(calls: dict, profile: Profile, pair: tuple | None = None,
                     levels: dict | None = None) -> dict:
    """Median, quartiles, min and max seconds per call of each callable (see the module doc).
    ``pair=(a, b)``: also the median over rounds of a's sample over b's sample taken in the same
    round (stats[a]["paired_median_ratio"]): on a busy machine whole stretches of samples run
    slower (the process shares a core), and a ratio of samples taken side by side cancels that
    where a ratio of medians does not (calls of identical code differed up to 3x by medians
    under --load 2, at most a few percent by paired ratios). ``levels``: the SIMD level each
    callable runs at (key -> a level of kernels._simd_levels(), absent: the detected one),
    set before its warm-up and each of its samples, outside the timed loop (``--simd``)."""
    set_level = _level_setter(levels)
    plan = {}
    for key, fn in calls.items():
        set_level(key)
        t0 = time.perf_counter()
        fn()  # warm-up, and a first estimate
        est = time.perf_counter() - t0
        if est < profile.sample_s:  # cheap: estimate on a few more calls
            count, t0 = 0, time.perf_counter()
            while True:
                fn()
                count += 1
                elapsed = time.perf_counter() - t0
                if elapsed >= profile.sample_s / 2 or count >= 10_000:
                    break
            est = elapsed / count
        k = max(1, int(profile.sample_s / est)) if est > 0 else 1000
        samples = int(profile.budget_s / (k * max(est, 1e-9)))
        samples = min(profile.max_samples, max(profile.min_samples, samples))
        if est > profile.slow_call_s:
            samples = 1
        plan[key] = (fn, k, samples)

    times = {key: [] for key in plan}
    keys = list(plan)
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        round_ = 0
        while any(len(times[key]) < plan[key][2] for key in keys):
            shift = round_ % len(keys)
            for key in keys[shift:] + keys[:shift]:
                fn, k, samples = plan[key]
                if len(times[key]) >= samples:
                    continue
                set_level(key)
                loop = range(k)
                t0 = time.perf_counter()
                for _ in loop:
                    fn()
                times[key].append((time.perf_counter() - t0) / k)
            round_ += 1
    finally:
        set_level(None)
        if gc_was_enabled:
            gc.enable()

    stats = {}
    for key, values in times.items():
        q1, q3 = _quartiles(values)
        stats[key] = {"median_s": _median(values), "q1_s": q1, "q3_s": q3, "min_s": min(values),
                      "max_s": max(values), "samples": len(values), "calls_per_sample": plan[key][1]}
    if pair:
        a, b = pair
        ratios = [ta / tb for ta, tb in zip(times[a], times[b])]
        stats[a]["paired_median_ratio"] = _median(ratios)
    return stats


def _level_setter(levels: dict | None):
    """``set_level(key)``: run the next calls at ``levels[key]`` (the detected level for a key
    not in it, and for None)."""
    if not levels:
        return lambda key: None
    from .. import kernels

    def set_level(key):
        kernels._set_simd_cap(levels.get(key) if key is not None else None)

    return set_level


SIMD_PREFIX = "fastloss@"  # timings key of the fused call at a SIMD level (--simd)


def simd_levels_available() -> tuple[str, ...]:
    """The SIMD levels ``--simd`` can time here (none on the NumPy backend)."""
    try:
        from .. import kernels
    except ImportError:
        return ()
    import fastloss

    return tuple(kernels._simd_levels()) if fastloss.get_backend() == "cython" else ()


def kernel_bytes(variant, x, t) -> int:
    """Bytes a fused loss + gradient pass must move: read input and target, write grad."""
    return 2 * x.nbytes + t.nbytes


# --------------------------------------------------------------------------- progress


class Progress:
    """A one-line progress bar on stderr when it is a terminal; otherwise a line per loss."""

    def __init__(self, total, stream):
        self.total, self.done, self.stream = total, 0, stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.start = time.perf_counter()
        self.width = 0

    def _write(self, text):
        if self.tty:
            pad = max(0, self.width - len(text))
            self.stream.write("\r" + text + " " * pad)
            self.width = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def status(self, text):
        """A transient message (a line of its own when not a terminal)."""
        self._write(f"fastloss bench: {text}")

    def row(self, label):
        self.done += 1
        if self.tty:
            filled = round(24 * self.done / max(self.total, 1))
            bar = "#" * filled + "." * (24 - filled)
            elapsed = time.perf_counter() - self.start
            self._write(f"[{bar}] {self.done}/{self.total} {elapsed:5.0f} s  {label}")

    def loss_done(self, label, rows, seconds):
        if not self.tty:
            self._write(f"fastloss bench: {label}: {rows} rows in {seconds:.1f} s")

    def close(self):
        if self.tty and self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()


# --------------------------------------------------------------------------- the run


def _rng(seed, variant_index, n, dtype):
    return np.random.default_rng([seed, variant_index, n, 32 if dtype == "float32" else 64])


def _cases(variant, plan):
    """(requested size, element count, dtype) of a variant, once per element count and dtype
    (class losses round sizes to whole rows: 1e3 and 1.5e3 are one case with C=1000)."""
    out, seen = [], set()
    for n_requested, dtype_name in plan:
        key = (variant.elements(n_requested), dtype_name)
        if key not in seen:
            seen.add(key)
            out.append((n_requested, *key))
    return out


def run(config: Config, err=None) -> dict:
    """Measure everything ``config`` asks for; returns the result (JSON-ready)."""
    err = err if err is not None else sys.stderr
    wall0 = time.perf_counter()
    variants = cases.variants(config.losses)
    plan = config.plan()
    threads = config.thread_counts()
    all_cores = usable_cores()
    with synthetic_load(config.load):
        return _run(config, err, wall0, variants, plan, threads, all_cores)


def _run(config, err, wall0, variants, plan, threads, all_cores) -> dict:
    load_before = other_load()
    loaded, skipped = runners.load_competitors(config.baselines())
    machine = machine_facts(loaded)
    machine["synthetic_load"] = config.load

    total = sum(len(_cases(v, plan)) * len(threads) for v in variants)
    progress = Progress(total, err)
    progress.status("measuring memory bandwidth ...")
    bandwidth = measure_bandwidth(threads)

    rows, memory, mismatches = [], [], []
    previous_torch_threads = None
    previous_fastloss_threads = runners.fastloss_threads()  # (the adapter's runner sets it per row)
    try:
        for vi, variant in enumerate(variants):
            t_variant = time.perf_counter()
            n_rows_before = len(rows)
            for n_requested, n, dtype_name in _cases(variant, plan):
                x, t = variant.make(_rng(config.seed, vi, n, dtype_name), n_requested,
                                    DTYPES[dtype_name])
                for thr in threads:
                    progress.row(f"{variant.label} n={_fmt_count(n)} {dtype_name} thr={thr}")
                    if any(c.key in ("torch", "torch_adapter") for c in loaded):
                        prev = runners.set_torch_threads(thr)
                        previous_torch_threads = previous_torch_threads or prev
                    row = _bench_row(variant, x, t, dtype_name, thr, thr >= all_cores, loaded,
                                     bandwidth, config.profile, config.simd or ())
                    rows.append(row)
                    mismatches += [(row, key) for key, ok in row["agrees"].items() if not ok]
                # after timing: every function has run, no warm-up call needed
                memory.append(_memory_row(variant, x, t, dtype_name, max(threads), loaded))
                del x, t
            progress.loss_done(variant.label, len(rows) - n_rows_before, time.perf_counter() - t_variant)
    finally:
        progress.close()
        if previous_torch_threads:
            runners.set_torch_threads(previous_torch_threads)
        if runners.fastloss_threads() != previous_fastloss_threads:
            import fastloss

            fastloss.set_num_threads(previous_fastloss_threads)
    machine["other_load_cpus"] = {"before": load_before, "after": other_load()}

    return {
        "schema": SCHEMA,
        "command": config.command or "python -m fastloss bench" + (" --quick" if config.quick else ""),
        "machine": machine,
        "bandwidth": {
            "add_gb_per_s": {str(k): v for k, v in bandwidth["add"].items()},
            "copy_gb_per_s": {str(k): v for k, v in bandwidth["copy"].items()},
            "add_min_max_gb_per_s": {str(k): v for k, v in bandwidth["add_range"].items()},
            "copy_min_max_gb_per_s": {str(k): v for k, v in bandwidth["copy_range"].items()},
            "elements": bandwidth["elements"], "dtype": bandwidth["dtype"],
            "repeats": bandwidth["repeats"],
        },
        "config": {
            "quick": config.quick,
            "losses": [v.label for v in variants],
            "sizes_dtypes": [[n, d] for n, d in plan],
            "threads": list(threads),
            "simd_levels": list(config.simd or ()),
            "compared": [c.key for c in loaded],
            "skipped": skipped,
            "profile": dataclasses.asdict(config.profile),
            "seed": config.seed,
        },
        "competitors": {c.key: {"label": c.label, "what": c.description, "version": c.version,
                                "threads": "row" if c.threaded else
                                ("all cores" if c.all_cores_only else "1")}
                        for c in [runners.FASTLOSS, runners.FASTLOSS_LOSS, *loaded]},
        "rows": rows,
        "thread_scaling": thread_scaling(rows),
        "memory": memory,
        "mismatches": [f"{r['loss']} n={r['elements']} {r['dtype']}: {key}" for r, key in mismatches],
        "wall_time_s": time.perf_counter() - wall0,
    }


# Issue 16's goal for a busy machine: the default-thread call at most this many times the
# one-thread call measured in the same run.
SCALING_GOAL = 1.5
ONE_THREAD = "fastloss_1thread"  # timings key: the fused call at n_threads=1 in a multi-thread row


def thread_scaling(rows) -> list[dict]:
    """For every loss, size and dtype: the fused call's time at the largest thread count of
    the run over the same call's at 1 thread, both timed in that row, interleaved (the median
    of the ratios of samples of one round, see time_interleaved; below 1:
    threads help; above 1: they cost, as on a busy machine where a parallel call waits for a
    helper). Empty when no row has more than one thread."""
    most = {}
    for r in rows:
        key = (r["loss"], r["elements"], r["dtype"])
        if r.get("vs_one_thread") is not None and r["threads"] >= most.get(key, {"threads": 0})["threads"]:
            most[key] = r
    return [{"loss": r["loss"], "elements": r["elements"], "dtype": r["dtype"], "threads": r["threads"],
             "ratio": r["vs_one_thread"]} for r in most.values()]


def _memory_row(variant, x, t, dtype_name, threads, loaded):
    fl_out = runners.FASTLOSS.runner(variant, x, t, threads).call
    fl_new = runners.build_fastloss_no_out(variant, x, t, threads).call
    entry = {"loss": variant.label, "elements": int(x.size), "dtype": dtype_name,
             "input_bytes": int(x.nbytes),
             "fastloss_out_bytes": peak_extra_bytes(fl_out, warm_up=False),
             "fastloss_bytes": peak_extra_bytes(fl_new, warm_up=False),
             "numpy_bytes": None}
    plain = runners.NUMPY.runner(variant, x, t, threads)
    if plain is not None:  # the loss has a plain-NumPy version
        entry["numpy_bytes"] = peak_extra_bytes(plain.call, warm_up=not any(c.key == "numpy" for c in loaded))
    return entry


NO_SUCH_LOSS = "has no such loss"  # why a competitor is not timed for a loss it lacks


def _bench_row(variant, x, t, dtype_name, thr, all_cores, loaded, bandwidth, profile, simd=()) -> dict:
    n = int(x.size)
    fused = runners.FASTLOSS.runner(variant, x, t, thr)
    calls = {"fastloss": fused.call,
             "fastloss_loss": runners.FASTLOSS_LOSS.runner(variant, x, t, thr).call}
    if thr > 1:  # the same call on one thread, interleaved with it (the Threads section)
        calls[ONE_THREAD] = runners.FASTLOSS.runner(variant, x, t, 1).call
    # the same call at each SIMD level asked for (--simd), interleaved with the rest
    levels = {SIMD_PREFIX + level: level for level in simd}
    for key in levels:
        calls[key] = runners.FASTLOSS.runner(variant, x, t, thr).call
    agrees, not_timed = {}, {}
    verify = n <= profile.verify_max
    reference = fused.result() if verify else None
    for c in loaded:
        if c.all_cores_only and not all_cores:
            not_timed[c.key] = "uses all cores: timed in all-core rows only"
            continue
        r = c.runner(variant, x, t, thr)
        if r is None:
            not_timed[c.key] = NO_SUCH_LOSS
            continue
        if verify:
            agrees[c.key] = runners.agrees(reference, r.result(), x.dtype)
        calls[c.key] = r.call
    del reference
    timings = time_interleaved(calls, profile, pair=("fastloss", ONE_THREAD) if ONE_THREAD in calls else None,
                               levels=levels)
    median = timings["fastloss"]["median_s"]
    nbytes = kernel_bytes(variant, x, t)
    bw_kind = "copy" if variant.classes else "add"
    gbps = nbytes / median / 1e9
    return {
        "loss": variant.label,
        "registry_name": variant.loss,
        "classes": variant.classes,
        "elements": n,
        "shape": list(x.shape),
        "dtype": dtype_name,
        "threads": thr,
        "bytes": nbytes,
        "timings": timings,
        "elements_per_s": n / median,
        "gb_per_s": gbps,
        "bandwidth_kind": bw_kind,
        "bandwidth_share": gbps / bandwidth[bw_kind][thr],
        "speedup": {key: timings[key]["median_s"] / median for key in timings
                    if key not in ("fastloss", "fastloss_loss", ONE_THREAD) and key not in levels},
        # --simd: the fused call's median time at each SIMD level, timed in this row
        "simd_levels": {level: timings[key]["median_s"] for key, level in levels.items()} or None,
        # the fused call at thr threads over the same call at 1 thread: the median of the
        # ratios of samples taken side by side (time_interleaved's pair)
        "vs_one_thread": timings["fastloss"].get("paired_median_ratio"),
        # issue 14: the PyTorch adapter against torch.nn.functional, both forward + backward
        "torch_adapter_vs_torch": (timings["torch"]["median_s"] / timings["torch_adapter"]["median_s"]
                                   if "torch" in timings and "torch_adapter" in timings else None),
        "agrees": agrees,
        "not_timed": not_timed,
    }


# --------------------------------------------------------------------------- the report


def _fmt_time(s):
    for unit, scale in (("ns", 1e-9), ("us", 1e-6), ("ms", 1e-3)):
        if s < 1000 * scale:
            v = s / scale
            return f"{v:.3g} {unit}" if v < 100 else f"{v:.0f} {unit}"
    return f"{s:.3g} s"


def _fmt_count(n):
    exp = int(round(math.log10(n))) if n > 0 else 0
    if n > 0 and 10 ** exp == n:
        return f"1e{exp}"
    return f"{n:.3g}".replace("e+0", "e").replace("e+", "e")


def _fmt_bytes(b):
    if b is None:
        return "-"
    for unit, scale in (("B", 1), ("KB", 1e3), ("MB", 1e6)):
        if b < 1000 * scale:
            return f"{b / scale:.0f} {unit}" if unit == "B" else f"{b / scale:.3g} {unit}"
    return f"{b / 1e9:.3g} GB"


def _fmt_speedup(r):
    return f"{r:.2f}x" if r < 10 else (f"{r:.1f}x" if r < 100 else f"{r:.0f}x")


_DT = {"float32": "f32", "float64": "f64"}


def _table(header, rows, right, sep_before=None):
    """Aligned text: header and rows are lists of cells; ``right``: right-align flags."""
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]

    def line(cells):
        out = []
        for i, (cell, w) in enumerate(zip(cells, widths)):
            if sep_before is not None and i == sep_before:
                out.append("|")
            out.append(str(cell).rjust(w) if right[i] else str(cell).ljust(w))
        return "  ".join(out).rstrip()

    return [line(header)] + [line(r) for r in rows]


def format_report(result: dict) -> str:
    m, bw, cfg = result["machine"], result["bandwidth"], result["config"]
    comps = result["competitors"]
    baselines = [k for k in cfg["compared"]]
    lines = []
    lines.append(f"fastloss {m['fastloss']} benchmark: {result['command']}")
    simd = m["simd"] or "n/a"
    omp = {True: "on", False: "off", None: "n/a"}[m["openmp"]]
    lines.append(f"machine    {m['cpu_model']}, {m['cores']} cores ({m['usable_cores']} usable); "
                 f"threads per row: {', '.join(map(str, cfg['threads']))}")
    lines.append(f"fastloss   backend {m['backend']}, SIMD {simd}, OpenMP {omp}, "
                 f"default threads {m['default_threads']}")
    if m["backend"] != "cython":
        lines.append("           WARNING: the compiled backend is not in use: fastloss runs on NumPy")
    soft = [f"Python {m['python']}", f"NumPy {m['numpy']}"]
    if m.get("cython"):
        soft.append(f"Cython {m['cython']}")
    for key, name in (("torch", "torch"), ("sklearn", "scikit-learn"), ("jax", "JAX")):
        if m.get(key):
            soft.append(f"{name} {m[key]}")
    lines.append("software   " + ", ".join(soft))
    add = ", ".join(f"{k} thr {v:.1f} GB/s" for k, v in bw["add_gb_per_s"].items())
    copy = ", ".join(f"{k} thr {v:.1f} GB/s" for k, v in bw["copy_gb_per_s"].items())
    lines.append(f"bandwidth  measured on {_fmt_count(bw['elements'])} float64, median of {bw['repeats']}: "
                 f"np.add (read 2 + write 1) {add}; np.copyto (read 1 + write 1) {copy}")
    load = m.get("other_load_cpus") or {}
    if load.get("before") is not None:
        text = (f"other processes kept {load['before']:.2f} CPUs busy before the run, "
                f"{load['after']:.2f} after")
        if m.get("synthetic_load"):
            text += f" ({m['synthetic_load']} of them busy processes started by --load)"
        if max(load["before"], load["after"] or 0) > 0.25:
            text += ("  WARNING: a busy machine: timings vary more, and multi-threaded calls "
                     "get less than a core per thread")
        lines.append(f"load       {text}")
    compared = ", ".join(comps[k]["label"] for k in baselines) or "none"
    lines.append(f"compared   {compared}")
    for key, why in cfg["skipped"].items():
        lines.append(f"skipped    {key}: {why}")
    lines.append("")
    lines.append("Columns")
    legend = [
        ("n", "input elements (class losses: N*C); dtype; thr = threads given to fastloss, torch, sklearn"),
        ("fused", "median time of one fastloss NAME_grad(x, t, out=buf) call: loss + gradient, "
                  "buffers allocated once"),
        ("IQR", "interquartile range of the samples, relative to the median"),
        ("loss only", "median time of NAME(x, t): the loss without its gradient"),
        ("Gel/s", "input elements per second of the fused call"),
        ("GB/s", "bytes the fused call must move (read input + target, write gradient; "
                 "int64 class indices) / time"),
        ("%BW", "GB/s as a share of the measured bandwidth at thr threads (np.add; np.copyto for "
                "class losses); above 100% the data sits in cache"),
    ]
    for key in baselines:
        legend.append((f"vs {comps[key]['label']}",
                       f"speed-up = its median / fused median; {comps[key]['what']}"))
    adapter = "torch" in baselines and "torch_adapter" in baselines
    if adapter:
        legend.append(("flt.torch vs torch", "the PyTorch adapter against torch.nn.functional, both "
                                             "forward + backward: torch's median / fastloss.torch's"))
    legend.append(("", "speed-ups < 1 mean fastloss is slower; all times of a row interleaved in "
                       "one run; '-' not timed; '!' result differs from fastloss"))
    w = max(len(k) for k, _ in legend)
    lines += [f"  {k.ljust(w)}  {v}" for k, v in legend]

    header = ["n", "dtype", "thr", "fused", "IQR", "loss only", "Gel/s", "GB/s", "%BW"]
    header += [f"vs {comps[k]['label']}" for k in baselines]
    if adapter:
        header.append("flt.torch vs torch")
    right = [True] * len(header)
    right[1] = False
    groups, order, absent = {}, [], {}
    for r in result["rows"]:
        if r["loss"] not in groups:
            groups[r["loss"]] = []
            order.append(r["loss"])
        lacking = absent.setdefault(r["loss"], [])
        lacking += [k for k in baselines if r.get("not_timed", {}).get(k) == NO_SUCH_LOSS and k not in lacking]
        tm = r["timings"]
        med = tm["fastloss"]["median_s"]
        cells = [_fmt_count(r["elements"]), _DT.get(r["dtype"], r["dtype"]), str(r["threads"]),
                 _fmt_time(med), f"{100 * (tm['fastloss']['q3_s'] - tm['fastloss']['q1_s']) / med:.0f}%",
                 _fmt_time(tm["fastloss_loss"]["median_s"]), f"{r['elements_per_s'] / 1e9:.3g}",
                 f"{r['gb_per_s']:.1f}", f"{100 * r['bandwidth_share']:.0f}%"]
        for k in baselines:
            if k in r["speedup"]:
                flag = "!" if r["agrees"].get(k) is False else ""
                cells.append(_fmt_speedup(r["speedup"][k]) + flag)
            else:
                cells.append("-")
        if adapter:
            ratio = r.get("torch_adapter_vs_torch")
            cells.append("-" if ratio is None else _fmt_speedup(ratio))
        groups[r["loss"]].append(cells)
    all_cells = [c for g in groups.values() for c in g]
    describe = {v.label: v.describe for v in cases.variants()}
    if all_cells:
        table = _table(header, all_cells, right, sep_before=9)
        head, body = table[0], iter(table[1:])
        for name in order:
            lines.append("")
            lines.append(f"{name}  ({describe.get(name, '')})")
            if absent.get(name):
                lines.append("  not timed ('-'), no such loss: " + ", ".join(comps[k]["label"] for k in absent[name]))
            lines.append("  " + head)
            for _ in groups[name]:
                lines.append("  " + next(body))

    # memory: the largest size per loss and dtype
    largest = {}
    for e in result["memory"]:
        key = (e["loss"], e["dtype"])
        if key not in largest or e["elements"] > largest[key]["elements"]:
            largest[key] = e
    if largest:
        lines.append("")
        lines.append("Peak extra memory of one call (tracemalloc; the largest size of each loss, "
                     "all sizes in --json)")
        mh = ["loss", "n", "dtype", "input", "fastloss out=", "fastloss", "plain numpy"]
        mrows = [[e["loss"], _fmt_count(e["elements"]), _DT.get(e["dtype"], e["dtype"]),
                  _fmt_bytes(e["input_bytes"]), _fmt_bytes(e["fastloss_out_bytes"]),
                  _fmt_bytes(e["fastloss_bytes"]), _fmt_bytes(e["numpy_bytes"])]
                 for e in largest.values()]
        lines += ["  " + s for s in _table(mh, mrows, [False, True, False, True, True, True, True])]

    scaling = result.get("thread_scaling") or []
    if scaling:
        worst = max(scaling, key=lambda e: e["ratio"])
        over = [e for e in scaling if e["ratio"] > SCALING_GOAL]
        lines.append("")
        lines.append(f"Threads: fused time at {worst['threads']} threads / at 1 thread, the median of the ratios "
                     f"of samples taken side by side in each row (below 1: threads help; the goal on a busy "
                     f"machine: at most {SCALING_GOAL}x)")
        by_loss = {}
        for e in scaling:
            by_loss.setdefault(e["loss"], []).append(e)
        th = ["loss", "best", "worst", "worst at"]
        trows = []
        for loss, es in by_loss.items():
            lo, hi = min(es, key=lambda e: e["ratio"]), max(es, key=lambda e: e["ratio"])
            trows.append([loss, f"{lo['ratio']:.2f}x", f"{hi['ratio']:.2f}x",
                          f"{_fmt_count(hi['elements'])} {_DT.get(hi['dtype'], hi['dtype'])}"])
        lines += ["  " + s for s in _table(th, trows, [False, True, True, False])]
        lines.append(f"  {len(over)} of {len(scaling)} rows above {SCALING_GOAL}x; worst "
                     f"{worst['ratio']:.2f}x ({worst['loss']} {_fmt_count(worst['elements'])} "
                     f"{_DT.get(worst['dtype'], worst['dtype'])})")

    lines += _simd_section(result)

    if result["mismatches"]:
        lines.append("")
        lines.append("WARNING: these baselines do not compute fastloss's result (speed-ups marked '!'):")
        lines += [f"  {s}" for s in result["mismatches"]]
    lines.append("")
    lines.append(f"{len(result['rows'])} rows in {result['wall_time_s']:.1f} s")
    return "\n".join(lines)


def _simd_section(result) -> list[str]:
    """--simd: per row, the fused call's time at each level and the speed-up of each level
    over the baseline one (all timed in the row, interleaved)."""
    levels = result["config"].get("simd_levels") or []
    rows = [r for r in result["rows"] if r.get("simd_levels")]
    if not rows:
        return []
    lines = ["", f"SIMD levels: the fused call at each level, timed side by side in each row "
                 f"(kernels._set_simd_cap; this CPU runs {', '.join(simd_levels_available()) or 'none'})"]
    head = ["loss", "n", "dtype", "thr"] + levels
    base = levels[0] if levels and levels[0] == "baseline" else None
    if base:
        head += [f"{lv} vs baseline" for lv in levels[1:]]
    table = []
    for r in rows:
        times = r["simd_levels"]
        cells = [r["loss"], _fmt_count(r["elements"]), _DT.get(r["dtype"], r["dtype"]), str(r["threads"])]
        cells += [_fmt_time(times[lv]) for lv in levels]
        if base:
            cells += [_fmt_speedup(times[base] / times[lv]) for lv in levels[1:]]
        table.append(cells)
    lines += ["  " + s for s in _table(head, table, [False] + [True] * (len(head) - 1))]
    return lines


# --------------------------------------------------------------------------- outputs


def write_json(result: dict, path: str) -> None:
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")


def plot(result: dict, path: str) -> None:
    """Speed-up over plain NumPy and bandwidth share against size, a line per loss, at
    the largest thread count of the run, one row of panels per dtype."""
    from matplotlib import ticker
    from matplotlib.figure import Figure

    rows = result["rows"]
    threads = max(r["threads"] for r in rows)
    dtypes = [d for d in DTYPES if any(r["dtype"] == d for r in rows)]
    losses = list(dict.fromkeys(r["loss"] for r in rows))
    fig = Figure(figsize=(13, 4.2 * len(dtypes) + 0.6), layout="constrained")
    axes = fig.subplots(len(dtypes), 2, squeeze=False)
    markers = "os^vD<>pP*hX"
    for i, dtype in enumerate(dtypes):
        ax_s, ax_b = axes[i]
        for j, loss in enumerate(losses):
            sel = sorted((r for r in rows if r["loss"] == loss and r["dtype"] == dtype
                          and r["threads"] == threads), key=lambda r: r["elements"])
            if not sel:
                continue
            style = dict(marker=markers[j % len(markers)], label=loss,
                         color=f"C{j % 10}", linestyle="-" if j < 10 else "--")
            xs = [r["elements"] for r in sel]
            speed = [(r["elements"], r["speedup"]["numpy"]) for r in sel if "numpy" in r["speedup"]]
            if speed:
                ax_s.plot(*zip(*speed), **style)
            ax_b.plot(xs, [100 * r["bandwidth_share"] for r in sel], **style)
        ax_s.axhline(1, color="gray", linestyle=":", linewidth=1)
        ax_b.axhline(100, color="gray", linestyle=":", linewidth=1)
        ax_b.annotate("measured DRAM bandwidth (above: data in cache)", (0.01, 100),
                      xycoords=("axes fraction", "data"), textcoords="offset points", xytext=(0, 3),
                      fontsize="x-small", color="gray")
        ax_s.set(xscale="log", yscale="log", xlabel="input elements",
                 ylabel="speed-up over plain NumPy (log)",
                 title=f"fused loss + gradient vs plain NumPy ({dtype}, {threads} threads)")
        ax_s.yaxis.set_major_locator(ticker.LogLocator(subs=(1, 2, 5)))
        ax_s.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}x"))
        ax_s.yaxis.set_minor_formatter(ticker.NullFormatter())
        ax_b.set(xscale="log", xlabel="input elements", ylabel="% of measured memory bandwidth",
                 title=f"fused loss + gradient: bandwidth share ({dtype}, {threads} threads)")
        ax_b.set_ylim(bottom=0)
        for ax in (ax_s, ax_b):
            ax.grid(True, which="major", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if not handles:
        handles, labels = axes[0][1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", fontsize="small")
    m = result["machine"]
    fig.suptitle(f"fastloss {m['fastloss']} ({m['backend']}, {m['simd'] or 'no SIMD info'}) on "
                 f"{m['cpu_model']}, {m['usable_cores']} cores")
    fig.savefig(path, dpi=110)


def info_text() -> str:
    facts = backend_facts()
    omp = {True: "on", False: "off", None: "n/a (compiled backend not built)"}[facts["openmp"]]
    unused = "" if facts["backend"] == "cython" or facts["openmp"] is None else \
        " (compiled in, unused: the backend is numpy)"
    omp += unused
    lines = [
        f"fastloss {facts['fastloss']}",
        f"backend      {facts['backend']}"
        + ("" if facts["backend"] == "cython" else "  (pure NumPy: the compiled backend is not in use)"),
        f"OpenMP       {omp}; threads per call: {facts['default_threads']} (fastloss.get_num_threads())",
        f"SIMD level   {facts['simd'] or 'n/a'}{unused if facts['simd'] else ''}",
        f"CPU          {cpu_model()}, {os.cpu_count()} cores ({usable_cores()} usable)",
        f"Python       {platform.python_version()} ({platform.python_implementation()})",
        f"NumPy        {np.__version__}",
        f"Cython       {_version('Cython') or 'not installed'}",
        f"torch        {_version('torch') or 'not installed'}",
        f"scikit-learn {_installed_version('scikit-learn') or 'not installed'}",
        f"JAX          {_installed_version('jax') or 'not installed'}",
    ]
    return "\n".join(lines)
