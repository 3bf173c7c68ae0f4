"""Time per call of every fused ``NAME_grad`` on a small input, with every argument form
(issue 16, point 3: "at 1e3 elements, at most 0.3 us per fused call for the memory-bound
losses and 1 us for every other loss, with any parameter or weight given").

    python bench/small_calls.py                 # 1e3 elements, float32, 1 thread
    python bench/small_calls.py --quick         # fewer rounds
    python bench/small_calls.py -n 10000 --dtype float64 --json small.json

Per loss (the registry's, each with the bench's inputs: fastloss/bench/cases.py), the call
``NAME_grad(x, t, out=g, n_threads=1)`` in these forms, built from its registry row:

* ``defaults``: no keyword beyond ``out``;
* ``params``: every scalar parameter passed explicitly, as a new object equal to its default
  (the issue's case: ``huber_loss_grad(x, t, delta=1.0, out=g)``);
* ``weight``: an elementwise weight like the input, or class weights (C,);
* ``operand``: ``pos_weight`` over the last axis, or ``quantile`` as a float;
* ``all``: all of these together.

Beside them, NumPy's own floor for one call on the same data: ``np.subtract(x, t, out=g)``
(for class losses, on the input's elements). Every form of a row and the floor are timed
in turn in each round (interleaved), in thread CPU time (``time.thread_time_ns``: time other
processes take is not counted, so a busy machine inflates it less than wall time); the table
shows the median over rounds of ns per call.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time

import numpy as np


def forms(spec, x, t, g, rng):
    """The argument forms of one loss (name -> keyword dict), from its registry row."""
    out = {"defaults": {}}
    if spec.params:
        # a new object equal to the default (not the registry's own object)
        out["params"] = {p.name: p.type(str(p.default)) if p.type is not bool else bool(p.default)
                         for p in spec.params}
    if spec.weight == "elementwise":
        out["weight"] = {"weight": rng.uniform(0.5, 2.0, x.shape).astype(x.dtype)}
    elif spec.weight:
        out["weight"] = {"weight": rng.uniform(0.5, 2.0, x.shape[1]).astype(x.dtype)}
    if spec.operand == "pos_weight":
        out["operand"] = {"pos_weight": rng.uniform(0.5, 2.0, x.shape[-1]).astype(x.dtype)}
    elif spec.operand == "quantile":
        out["operand"] = {"quantile": 0.3}
    if len(out) > 2:
        everything = {}
        for kw in out.values():
            everything.update(kw)
        out["all"] = everything
    return out


def time_row(calls: dict, rounds: int, per_round: int) -> dict:
    """Median ns per call of each callable, timed in turn in each round (thread CPU time)."""
    times = {k: [] for k in calls}
    for fn in calls.values():
        fn()  # warm-up
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for r in range(rounds):
            keys = list(calls)
            keys = keys[r % len(keys):] + keys[:r % len(keys)]
            for key in keys:
                fn = calls[key]
                t0 = time.thread_time_ns()
                for _ in range(per_round):
                    fn()
                times[key].append((time.thread_time_ns() - t0) / per_round)
    finally:
        if gc_was:
            gc.enable()
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="7 rounds instead of 25")
    parser.add_argument("-n", type=float, default=1e3, help="elements (class losses: N*C; default 1e3)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--losses", help="registry names, comma-separated (default: all)")
    parser.add_argument("--json", help="also write the results as JSON")
    args = parser.parse_args(argv)

    import fastloss
    from fastloss._registry import BY_NAME, LOSSES
    from fastloss.bench import cases

    if fastloss.get_backend() != "cython":
        sys.exit("bench/small_calls.py: the compiled backend is not in use; nothing to measure")
    names = args.losses.split(",") if args.losses else [s.name for s in LOSSES]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        parser.error(f"unknown losses {unknown}")
    dtype = np.dtype(args.dtype)
    n = int(args.n)
    rounds = 7 if args.quick else 25
    per_round = max(20, int(200_000 // max(n, 1)))
    columns = ["defaults", "params", "weight", "operand", "all"]
    rows = []
    for name in names:
        spec = BY_NAME[name]
        variant = cases.CASES[name][0] if name in cases.CASES else cases.derived_variant(spec)
        rng = np.random.default_rng(0)
        x, t = variant.make(rng, variant.rows(n), dtype)
        g = np.empty_like(x)
        fn = getattr(fastloss, name + "_grad")
        calls = {key: (lambda kw=kw: fn(x, t, out=g, n_threads=1, **kw))
                 for key, kw in forms(spec, x, t, g, rng).items()}
        xf, tf = x.reshape(-1), np.empty_like(x).reshape(-1)
        gf = np.empty_like(xf)
        calls["numpy floor"] = lambda: np.subtract(xf, tf, out=gf)
        ns = time_row(calls, rounds, per_round)
        rows.append({"loss": variant.label, "elements": int(x.size), **{k: ns.get(k) for k in columns},
                     "numpy_floor": ns["numpy floor"]})
        print(f"  {variant.label}", file=sys.stderr, flush=True)

    head = ["loss", "elements"] + [f"{c} ns" for c in columns] + ["np.subtract ns"]
    table = [[r["loss"], str(r["elements"])] + ["-" if r[c] is None else f"{r[c]:.0f}" for c in columns]
             + [f"{r['numpy_floor']:.0f}"] for r in rows]
    widths = [max(len(row[i]) for row in [head] + table) for i in range(len(head))]
    print(f"fastloss {fastloss.__version__}, {fastloss.kernels.simd_level()}, {args.dtype}, 1 thread, "
          f"median of {rounds} rounds of {per_round} calls (thread CPU time)")
    for row in [head] + table:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"dtype": args.dtype, "elements": n, "simd": fastloss.kernels.simd_level(),
                       "rounds": rounds, "calls_per_round": per_round, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
