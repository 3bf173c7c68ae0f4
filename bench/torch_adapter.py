"""fastloss.torch against PyTorch's own losses, eager and compiled (issue 14, point 4).

    python bench/torch_adapter.py                 # 1e3, 1e5, 1e6 elements; float32, bfloat16; torch.compile
    python bench/torch_adapter.py --big           # and 1e7 elements
    python bench/torch_adapter.py --quick         # 1e3 and 1e5, no torch.compile, batch 256 only
    python bench/torch_adapter.py --losses mse_loss,cross_entropy --no-training --json out.json

Part 1, the loss alone: for every registry loss that ``torch.nn.functional`` has (the rows
``fastloss.torch`` takes the signature of: ``fastloss.torch.signature_of``), with the
benchmark's inputs (``fastloss.bench.cases``: cross-entropy with 10 and 1000 classes), at
each size (elements; a class loss has n / C samples), in float32 and bfloat16, one forward +
``.backward()`` (the input a leaf, ``x.grad = None`` before each call, as the bench) of:

* ``F``: ``torch.nn.functional.NAME(x, t)`` (the bench's PyTorch baseline: kl_div's "mean"
  as its "sum" / numel, which ``F.kl_div(reduction="mean")`` warns about at every call);
* ``c(F)``: the same function under ``torch.compile(dynamic=True, fullgraph=True)``;
* ``flt``: ``fastloss.torch.NAME(x, t)``, eager;
* ``c(flt)``: the same under ``torch.compile(dynamic=True, fullgraph=True)`` (fastloss's
  custom operator inside the graph).

A bfloat16 input keeps a bfloat16 (float) target, as a user would have it; PyTorch computes
in bfloat16 (its loss a bfloat16), fastloss in float32 (its loss a float32, its gradient
bfloat16). A compiled function is compiled once per loss (variant) and dtype (``dynamic=True``: the
sizes share the graph unless a guard asks again, e.g. a size of 1); its compile time is the
first calls' time, reported apart (``compile`` table) with the number of graphs compiled;
Inductor's on-disk cache makes a second run's compiles much shorter (0.7 s against 11.6 s
median for ``c(F)`` here).

Every implementation's loss and gradient are checked against fastloss.torch's eager result
before timing (float32: ``fastloss.bench.runners.agrees``; bfloat16: the loss within 1%,
the gradient within 2% of its largest magnitude); ``!`` marks a disagreement (still timed).
Timing is ``fastloss.bench.core.time_interleaved``: the four implementations of a row sampled
in turn (a background load hits them alike), medians of repeats. Ratios are PyTorch's time /
fastloss's (above 1: fastloss faster), of medians of the same row. The goal (issue 14) is
``F / flt > 1`` and ``c(F) / c(flt) > 1`` in every row; ``miss`` names what falls short.

Part 2, one training step of a small CPU model: an MLP (64 -> 256 -> 256 -> out, ReLU),
batch 256 and 4096, float32, SGD (lr 0.01): ``zero_grad``, forward, loss, ``.backward()``,
``step``, with the loss from ``torch.nn.functional`` or ``fastloss.torch`` on two copies of
the same model (their first step's loss and gradients checked equal before timing):
classification (10 classes, ``cross_entropy``) and regression (1 output, ``mse_loss``,
``huber_loss``).

Threads: PyTorch and fastloss both on one thread (``--threads N`` for more: on a busy
machine a parallel region waits for a time slice on the busy core, and all-core timings of
small calls measure the scheduler: 30 ms for a 1e5-element loss, seen here). The
machine's load (``os.getloadavg`` and the CPUs other processes keep busy) is recorded at
start and end: on a busy machine differences under 1.3x are noise unless repeated.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time

import numpy as np

import fastloss
from fastloss import _registry
from fastloss.bench import cases, core, runners

SIZES = (1_000, 100_000, 1_000_000)
BIG = 10_000_000
QUICK_SIZES = (1_000, 100_000)
DTYPES = ("float32", "bfloat16")
IMPLS = ("F", "c(F)", "flt", "c(flt)")
PROFILE = core.Profile(sample_s=2e-3, min_samples=5, max_samples=21, budget_s=0.3)
BATCHES = (256, 4096)


def torch_losses(names=None) -> list:
    """The registry losses torch.nn.functional has (those fastloss.torch takes the
    signature of), registry order."""
    import fastloss.torch as flt

    return [spec for spec in _registry.LOSSES if flt.signature_of(spec)[1] == "torch.nn.functional"
            and (names is None or spec.name in names)]


def fmt_time(s):
    return "-" if s is None else core._fmt_time(s)


def fmt_ratio(r):
    return "-" if r is None else f"{r:.2f}"


# --------------------------------------------------------------------------- part 1


class Compiled:
    """One torch.compile'd function per (implementation, loss, dtype): its compile time is
    the time of the first call at each size (beyond that call's own time, a few us to ms)."""

    def __init__(self, torch, fn):
        # a wrapper with its own code object: dynamo caches graphs per code object (at most
        # 8), and a shared one would make every loss and dtype a recompile of the last
        namespace = {"fn": fn}
        exec("def compiled(x, t):\n    return fn(x, t)\n", namespace)
        self.fn = torch.compile(namespace["compiled"], dynamic=True, fullgraph=True)
        self.first_calls_s = 0.0
        self.sizes_seen = set()
        self.graphs = 0


def make_tensors(torch, variant, n, dtype, seed):
    rng = np.random.default_rng([seed, n])
    x, t = variant.make(rng, n, np.float32)
    xt, tt = torch.from_numpy(x), torch.from_numpy(t)
    if dtype == "bfloat16":
        xt = xt.to(torch.bfloat16)
        if tt.dtype.is_floating_point:
            tt = tt.to(torch.bfloat16)
    return xt.requires_grad_(True), tt


def step_call(fn, x, t):
    def call():
        x.grad = None
        loss = fn(x, t)
        loss.backward()
        return loss

    return call


def result_of(call, x):
    loss = call()
    return float(loss.detach().float()), x.grad.detach().float().numpy().copy()


def agrees(reference, candidate, dtype):
    if dtype == "float32":
        return runners.agrees(reference, candidate, np.float32)
    (loss_ref, grad_ref), (loss, grad) = reference, candidate
    if grad.shape != grad_ref.shape or not abs(loss - loss_ref) <= 1e-2 * max(abs(loss_ref), 1e-30):
        return False
    scale = float(np.max(np.abs(grad_ref))) if grad_ref.size else 0.0
    return grad_ref.size == 0 or float(np.max(np.abs(grad - grad_ref))) <= 2e-2 * max(scale, 1e-30)


def loss_part(torch, specs, sizes, compile_, seed, out):
    import torch.nn.functional as F

    import fastloss.torch as flt

    dynamo_counters = None
    if compile_:
        from torch._dynamo.utils import counters as dynamo_counters
    print("\n## The loss alone: forward + backward\n")
    print("| loss | n | dtype | F | c(F) | flt | c(flt) | F / flt | c(F) / c(flt) | miss |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    compiled: dict = {}
    rows = []
    for spec in specs:
        for variant in cases.variants_of(spec):
            f_fn = cases.torch_function(spec.name, F)
            flt_fn = getattr(flt, spec.name)
            fns = {"F": lambda x, t, f=f_fn: f(F, x, t), "flt": flt_fn}
            for dtype in DTYPES:
                for n in sizes:
                    x, t = make_tensors(torch, variant, n, dtype, seed)
                    calls, notes = {}, {}
                    for key in IMPLS:
                        base = key[2:-1] if key.startswith("c(") else key
                        fn = fns[base]
                        if key.startswith("c("):
                            if not compile_:
                                continue
                            ckey = (key, variant.label, dtype)
                            if ckey not in compiled:
                                compiled[ckey] = Compiled(torch, fns[base])
                            comp = compiled[ckey]
                            fn = comp.fn
                        xi = x.detach().clone().requires_grad_(True)
                        call = step_call(fn, xi, t)
                        graphs0 = dynamo_counters["stats"]["unique_graphs"] if dynamo_counters else 0
                        t0 = time.perf_counter()
                        try:
                            res = result_of(call, xi)
                        except Exception as exc:  # e.g. PyTorch's multi_margin_loss has no bfloat16 kernel
                            notes[key] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:100]}"
                            continue
                        first = time.perf_counter() - t0
                        if key.startswith("c("):
                            comp.first_calls_s += first
                            comp.sizes_seen.add(n)
                            comp.graphs += dynamo_counters["stats"]["unique_graphs"] - graphs0
                        calls[key] = (call, res)
                    reference = calls.get("flt", (None, None))[1]
                    ok = {key: reference is not None and agrees(reference, res, dtype)
                          for key, (_, res) in calls.items()}
                    stats = core.time_interleaved({key: c for key, (c, _) in calls.items()}, PROFILE)
                    t_ = {key: v["median_s"] for key, v in stats.items()}
                    r_eager = t_["F"] / t_["flt"] if "F" in t_ and "flt" in t_ else None
                    r_comp = t_["c(F)"] / t_["c(flt)"] if "c(F)" in t_ and "c(flt)" in t_ else None
                    miss = [label for label, r in (("eager", r_eager), ("compiled", r_comp))
                            if r is not None and r <= 1.0]
                    cells = [f"{fmt_time(t_.get(k))}{'' if ok.get(k, True) else ' !'}" if k in t_ or k not in notes
                             else "n/a" for k in IMPLS]
                    elements = variant.elements(n)
                    label = variant.label
                    print(f"| {label} | {core._fmt_count(elements)} | {dtype} | {' | '.join(cells)} "
                          f"| {fmt_ratio(r_eager)} | {fmt_ratio(r_comp)} | {', '.join(miss)} |", flush=True)
                    for key, note in notes.items():
                        print(f"|   ({key}: {note}) |||||||||", flush=True)
                    rows.append({"loss": spec.name, "variant": label, "elements": elements, "dtype": dtype,
                                 "median_s": t_, "stats": stats, "agrees": ok, "notes": notes,
                                 "F_over_flt": r_eager, "cF_over_cflt": r_comp, "miss": miss})
                    del x, t, calls
    out["loss_rows"] = rows
    if compile_:
        print("\n## torch.compile: compile time (the first calls at each size) and graphs compiled\n")
        print("| loss | dtype | c(F) | c(F) graphs | c(flt) | c(flt) graphs |")
        print("|---|---|---|---|---|---|")
        comp_rows = []
        for label in dict.fromkeys(v.label for spec in specs for v in cases.variants_of(spec)):
            for dtype in DTYPES:
                f_c, l_c = compiled.get(("c(F)", label, dtype)), compiled.get(("c(flt)", label, dtype))
                cells = [(f"{c.first_calls_s:.1f} s", str(c.graphs)) if c else ("-", "-")
                         for c in (f_c, l_c)]
                print(f"| {label} | {dtype} | {cells[0][0]} | {cells[0][1]} | {cells[1][0]} | {cells[1][1]} |")
                comp_rows.append({"variant": label, "dtype": dtype,
                                  "cF_first_calls_s": f_c.first_calls_s if f_c else None,
                                  "cF_graphs": f_c.graphs if f_c else None,
                                  "cflt_first_calls_s": l_c.first_calls_s if l_c else None,
                                  "cflt_graphs": l_c.graphs if l_c else None})
        out["compile_rows"] = comp_rows


# --------------------------------------------------------------------------- part 2


def mlp(torch, d_in, d_out, seed):
    torch.manual_seed(seed)
    nn = torch.nn
    return nn.Sequential(nn.Linear(d_in, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, d_out))


def training_part(torch, batches, seed, out):
    import torch.nn.functional as F

    import fastloss.torch as flt

    print("\n## One training step: MLP 64 -> 256 -> 256 -> out, SGD, float32\n")
    print("| task | loss | batch | step with F | step with flt | F / flt | saved per step |")
    print("|---|---|---|---|---|---|---|")
    tasks = [("classification (10 classes)", "cross_entropy", 10),
             ("regression", "mse_loss", 1), ("regression", "huber_loss", 1)]
    rows = []
    for batch in batches:
        for task, name, d_out in tasks:
            g = torch.Generator().manual_seed(seed)
            X = torch.randn(batch, 64, generator=g)
            y = (torch.randint(0, d_out, (batch,), generator=g) if d_out > 1
                 else torch.randn(batch, 1, generator=g))
            models = {"F": mlp(torch, 64, d_out, seed)}
            models["flt"] = copy.deepcopy(models["F"])
            fns = {"F": getattr(F, name), "flt": getattr(flt, name)}
            opts = {k: torch.optim.SGD(m.parameters(), lr=0.01) for k, m in models.items()}

            def make(key):
                model, opt, fn = models[key], opts[key], fns[key]

                def step():
                    opt.zero_grad()
                    loss = fn(model(X), y)
                    loss.backward()
                    opt.step()
                    return loss

                return step

            steps = {k: make(k) for k in models}
            # the first step from the same weights: the same loss and gradients
            firsts = {}
            for key, model in models.items():
                model.zero_grad()
                loss = fns[key](model(X), y)
                loss.backward()
                firsts[key] = (loss.item(), [p.grad.detach().clone() for p in model.parameters()])
            ok = abs(firsts["F"][0] - firsts["flt"][0]) <= 1e-5 * max(abs(firsts["F"][0]), 1e-30) and all(
                torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(firsts["F"][1], firsts["flt"][1]))
            stats = core.time_interleaved(steps, PROFILE)
            t_ = {k: v["median_s"] for k, v in stats.items()}
            print(f"| {task} | {name} | {batch} | {fmt_time(t_['F'])} | {fmt_time(t_['flt'])}{'' if ok else ' !'} "
                  f"| {t_['F'] / t_['flt']:.2f} | {fmt_time(t_['F'] - t_['flt']) if t_['F'] > t_['flt'] else '-'} |",
                  flush=True)
            rows.append({"task": task, "loss": name, "batch": batch, "median_s": t_, "stats": stats, "agrees": ok})
    out["training_rows"] = rows


# --------------------------------------------------------------------------- main


def load():
    facts = {"loadavg": list(os.getloadavg()), "other_processes_cpus": core.other_load()}
    return facts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="1e3 and 1e5 elements, no torch.compile, batch 256 only")
    parser.add_argument("--big", action="store_true", help="add 1e7 elements (slow)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="time torch.compile'd F and fastloss.torch too (default: yes, but not with --quick)")
    parser.add_argument("--losses", help="comma-separated registry names (default: all PyTorch has)")
    parser.add_argument("--sizes", help="comma-separated element counts, e.g. 1e3,1e5")
    parser.add_argument("--no-training", action="store_true", help="the loss timings only")
    parser.add_argument("--no-losses", action="store_true", help="the training step only")
    parser.add_argument("--threads", type=int, default=1,
                        help="threads of PyTorch and fastloss (default 1: on a machine other processes "
                             "keep busy, a parallel region waits for a time slice and all-core timings "
                             "measure the scheduler)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    args = parser.parse_args(argv)
    import torch

    compile_ = (not args.quick) if args.compile is None else args.compile
    if args.sizes:
        sizes = tuple(int(float(s)) for s in args.sizes.split(","))
    else:
        sizes = (QUICK_SIZES if args.quick else SIZES) + ((BIG,) if args.big else ())
    names = set(args.losses.split(",")) if args.losses else None
    specs = torch_losses(names)
    if names and len(specs) != len(names):
        parser.error(f"not a registry loss torch.nn.functional has: {sorted(names - {s.name for s in specs})}")
    batches = BATCHES[:1] if args.quick else BATCHES
    torch.set_num_threads(args.threads)
    fastloss.set_num_threads(args.threads)

    facts = core.backend_facts()
    start = load()
    command = " ".join([os.path.basename(sys.argv[0])] + (argv if argv is not None else sys.argv[1:]))
    print(f"# fastloss.torch against torch.nn.functional: {command}")
    print(f"{core.cpu_model()}, {core.usable_cores()} usable cores, {args.threads} threads; fastloss "
          f"{facts['fastloss']} backend {facts['backend']} SIMD {facts['simd']} OpenMP {facts['openmp']}; "
          f"torch {torch.__version__}; Python {platform.python_version()}")
    print(f"load at start: loadavg {' '.join(f'{v:.2f}' for v in start['loadavg'])}"
          + (f", other processes keep {start['other_processes_cpus']:.1f} CPUs busy"
             if start["other_processes_cpus"] is not None else ""))
    if fastloss.get_backend() != "cython":
        print("WARNING: fastloss runs on its NumPy backend: these are not the compiled kernels' numbers")
    out = {"command": command, "facts": {**facts, "torch": torch.__version__, "cpu": core.cpu_model(),
                                         "threads": args.threads}, "load_start": start, "sizes": list(sizes),
           "compile": compile_}
    t0 = time.perf_counter()
    if not args.no_losses:
        loss_part(torch, specs, sizes, compile_, args.seed, out)
    if not args.no_training:
        training_part(torch, batches, args.seed, out)
    end = load()
    out["load_end"], out["total_s"] = end, time.perf_counter() - t0
    print(f"\nload at end: loadavg {' '.join(f'{v:.2f}' for v in end['loadavg'])}"
          + (f", other processes keep {end['other_processes_cpus']:.1f} CPUs busy"
             if end["other_processes_cpus"] is not None else "")
          + f" (total {out['total_s']:.0f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1, default=str)


if __name__ == "__main__":
    main()
