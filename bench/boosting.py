"""Gradient-boosting objectives: fastloss against the code it replaces (issue 13, point 5).

    python bench/boosting.py            # 1e5, 1e6, 1e7 samples; training at 1e5 and 1e6 rows
    python bench/boosting.py --quick    # 1e5, 1e6 samples; training at 1e5 rows

Part 1, the objective alone: one call computing the per-sample gradient and Hessian of
logistic, squared error, Poisson and softmax (K = 5) objectives, XGBoost's conventions
(half squared error, Poisson Hessian ``exp(x + 0.7)``, softmax Hessian ``2 p (1 - p)``), and
softmax in LightGBM's (scores class-major, seen as a Fortran-ordered (n, K) array; Hessian
``K / (K - 1) p (1 - p)``), at each size, in float32 and float64, with 1 and all usable threads:

* ``fastloss``: the objective object of ``fastloss.xgboost`` / ``fastloss.lightgbm`` (their
  shared core, ``fastloss._boosting``), writing into reused buffers of the input's dtype;
* ``numpy``: the objective a user writes (the XGBoost demos' formulas: sigmoid, then
  ``p - y`` and ``p (1 - p)``; softmax through ``exp`` of the shifted margins), which
  allocates its results (NumPy runs single-threaded whatever the row's thread count);
* ``sklearn``: scikit-learn's private ``sklearn._loss`` ``gradient_hessian(y_true,
  raw_prediction, None, gradient_out, hessian_out, n_threads)`` into preallocated buffers
  (its Poisson Hessian is ``exp(x)``, its softmax Hessian ``p (1 - p)``: the same work).

Every baseline's gradient and Hessian are checked against fastloss's (up to those known
constant factors) before timing. Timing is ``fastloss.bench.core.time_interleaved``: medians
of repeated samples, the implementations of a row sampled in turn. Ratios are baseline
time / fastloss time (above 1: fastloss is faster). The softmax labels are the same float
array every call, as LightGBM passes them (their conversion to class indices is cached);
XGBoost hands a fresh label array every round, which adds one pass over the n labels.

Part 2, end-to-end training: XGBoost (``hist``) and LightGBM on synthetic data (20 float32
features; labels from a random linear model) with the built-in objective, the NumPy
objective and the fastloss objective, all threads, 20 rounds. The time inside the objective
is measured by a wrapper around it: its share of the training time is what any objective
could save at most.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np

import fastloss
from fastloss import _boosting
from fastloss.bench import core

MDS = 0.7  # the libraries' Poisson max_delta_step
K = 5


# --------------------------------------------------------------------------- objectives


def numpy_logistic(x, y):
    p = 1.0 / (1.0 + np.exp(-x))
    return p - y, p * (1.0 - p)


def numpy_squared_error(x, y):
    return x - y, np.ones_like(x)


def numpy_poisson(x, y):
    return np.exp(x) - y, np.exp(x + MDS)


def numpy_softmax(x, y):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    grad = p.copy()
    grad[np.arange(x.shape[0]), y.astype(np.int64)] -= 1.0
    return grad, np.maximum(2.0 * p * (1.0 - p), 1e-16)


OBJECTIVES = {
    # name: (core factory, numpy function, sklearn class and kwargs, hess factor sklearn -> fastloss)
    "logistic": (lambda: _boosting.ElementwiseObjective(_boosting.logistic()), numpy_logistic,
                 ("HalfBinomialLoss", {}), 1.0),
    "squared_error": (lambda: _boosting.ElementwiseObjective(_boosting.squared_error()), numpy_squared_error,
                      ("HalfSquaredError", {}), 1.0),
    "poisson": (lambda: _boosting.ElementwiseObjective(_boosting.poisson(MDS)), numpy_poisson,
                ("HalfPoissonLoss", {}), math.exp(MDS)),
    "softmax": (lambda: _boosting.SoftmaxObjective(hess_scale=2.0), numpy_softmax,
                ("HalfMultinomialLoss", {"n_classes": K}), 2.0),
    # LightGBM's layout: (n, K) scores in Fortran order (a view of K blocks of n), its Hessian
    # factor K / (K - 1); fastloss computes the (K, n) class-major blocks as they lie, NumPy
    # and scikit-learn take the Fortran-ordered (n, K) array (strided reads)
    "softmax_lgb": (lambda: _boosting.SoftmaxObjective(hess_scale=None), lambda x, y: numpy_softmax_lgb(x, y),
                    ("HalfMultinomialLoss", {"n_classes": K}), K / (K - 1)),
}
CLASS_MAJOR = {"softmax_lgb"}


def make_inputs(name, n, dtype, rng):
    if name in ("softmax", "softmax_lgb"):
        x = rng.standard_normal((n, K)).astype(dtype)
        y = rng.integers(0, K, n).astype(dtype)
        if name in CLASS_MAJOR:
            x = np.asfortranarray(x)
    elif name == "logistic":
        x = rng.standard_normal(n).astype(dtype)
        y = (rng.random(n) < 0.5).astype(dtype)
    elif name == "poisson":
        x = rng.normal(0.0, 0.5, n).astype(dtype)
        y = rng.poisson(np.exp(x.astype(np.float64))).astype(dtype)
    else:
        x = rng.standard_normal(n).astype(dtype)
        y = rng.standard_normal(n).astype(dtype)
    return x, y


def sklearn_loss(spec):
    try:
        from sklearn._loss import loss as sk_loss
    except ImportError:
        return None
    cls, kwargs = spec
    return getattr(sk_loss, cls)(**kwargs)


def check(name, fast, other, factor, dtype, who):
    g, h = fast
    og, oh = other
    rtol, atol = (2e-4, 2e-6) if dtype == np.float32 else (1e-9, 1e-12)
    ok = np.allclose(og, g, rtol=rtol, atol=atol) and np.allclose(np.asarray(oh) * factor, h, rtol=rtol, atol=atol)
    if not ok:
        raise SystemExit(f"{who} {name}: gradient/Hessian differ from fastloss's; not timing a different result")


def fmt_time(s):
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3g} ms"
    return f"{s * 1e6:.3g} us"


def objective_part(sizes, threads, profile, rng):
    print("\n## The objective alone: gradient + Hessian of one boosting round\n")
    print("| objective | n | dtype | threads | fastloss | numpy | sklearn | numpy / fastloss | sklearn / fastloss |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows = []
    for name, (factory, np_fn, sk_spec, sk_factor) in OBJECTIVES.items():
        try:
            factory()
        except AttributeError as exc:  # a loss this fastloss does not have yet
            print(f"| {name} | skipped: {exc} |||||||")
            continue
        sk = sklearn_loss(sk_spec)
        for n in sizes:
            for dtype in (np.float32, np.float64):
                x, y = make_inputs(name, n, dtype, rng)
                obj = factory()
                if name in CLASS_MAJOR:  # the (K, n) blocks; results compared as (n, K)
                    def fl_call(o=obj, x=x, y=y):
                        return o.grad_hess(x.T, y, class_major=True)
                    fast = [a.T.copy() for a in fl_call()]
                else:
                    def fl_call(o=obj, x=x, y=y):
                        return o.grad_hess(x, y)
                    fast = [a.copy() for a in fl_call()]
                np_np = np_fn(x, y)
                check(name, fast, np_np, 1.0, dtype, "numpy")
                del np_np
                if sk is not None:
                    sg, sh = np.empty_like(x), np.empty_like(x)
                    sk.gradient_hessian(y, x, None, sg, sh, 1)
                    check(name, fast, (sg, sh), sk_factor, dtype, "sklearn")
                del fast
                for thr in threads:
                    obj.n_threads = thr
                    calls = {"fastloss": fl_call,
                             "numpy": lambda f=np_fn, x=x, y=y: f(x, y)}
                    if sk is not None:
                        calls["sklearn"] = (lambda s=sk, x=x, y=y, g=sg, h=sh, thr=thr:
                                            s.gradient_hessian(y, x, None, g, h, thr))
                    stats = core.time_interleaved(calls, profile)
                    t = {k: v["median_s"] for k, v in stats.items()}
                    fl_t, sk_t = t["fastloss"], t.get("sklearn")
                    label = {"softmax": "softmax K=5", "softmax_lgb": "softmax K=5, LightGBM's class-major"}.get(name, name)
                    sk_cols = f"{fmt_time(sk_t)} | {sk_t / fl_t:.2f}x" if sk_t else "- | -"
                    sk_time, sk_ratio = sk_cols.split(" | ")
                    row = (f"| {label} | {n:.0e} | {np.dtype(dtype).name} | {thr} | {fmt_time(fl_t)} "
                           f"| {fmt_time(t['numpy'])} | {sk_time} | {t['numpy'] / fl_t:.2f}x | {sk_ratio} |")
                    print(row, flush=True)
                    rows.append((name, n, np.dtype(dtype).name, thr, t))
                del x, y
    return rows


# --------------------------------------------------------------------------- training


class Timed:
    """Wraps a native objective and adds up the time spent in it. A copy is the wrapper
    itself (lgb.train deep-copies its params)."""

    def __init__(self, fn):
        self.fn = fn
        self.seconds = 0.0
        self.calls = 0

    def __call__(self, preds, data):
        t0 = time.perf_counter()
        out = self.fn(preds, data)
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        return out

    def __deepcopy__(self, memo):
        return self


def numpy_native(fn):
    """A NumPy objective in the native form: labels and weights from the training data."""
    def objective(preds, data):
        y = data.get_label()
        return fn(preds, y)
    return objective


def synthetic(kind, n, rng, features=20):
    X = rng.standard_normal((n, features)).astype(np.float32)
    if kind == "softmax":
        W = rng.standard_normal((features, K)) / math.sqrt(features) * 2
        y = np.argmax(X @ W + rng.gumbel(size=(n, K)), axis=1).astype(np.float32)
    else:
        z = X @ (rng.standard_normal(features) / math.sqrt(features))
        if kind == "logistic":
            y = (rng.random(n) < 1 / (1 + np.exp(-2 * z))).astype(np.float32)
        else:
            y = (z + 0.5 * rng.standard_normal(n)).astype(np.float32)
    return X, y


def training_part(sizes, threads, rng, rounds=20):
    print(f"\n## End to end: {rounds} boosting rounds, {threads} threads, 20 features\n")
    print("| library | objective | rows | built-in | NumPy objective (share in objective) "
          "| fastloss objective (share in objective) | objective ms/round NumPy -> fastloss |")
    print("|---|---|---|---|---|---|---|")
    try:
        import xgboost as xgb
    except ImportError:
        xgb = None
        print("(xgboost not installed: skipped)")
    try:
        import lightgbm as lgb
    except ImportError:
        lgb = None
        print("(lightgbm not installed: skipped)")
    import fastloss.lightgbm as fll
    import fastloss.xgboost as flx

    cases = [("logistic", numpy_logistic), ("squared_error", numpy_squared_error), ("softmax", numpy_softmax)]
    for n in sizes:
        for kind, np_fn in cases:
            X, y = synthetic(kind, n, rng)
            if xgb is not None:
                dtrain = xgb.DMatrix(X, y, nthread=threads)
                params = {"nthread": threads, "tree_method": "hist", "max_depth": 6, "eta": 0.1,
                          "disable_default_eval_metric": 1, "base_score": 0.0}
                if kind == "softmax":
                    params["num_class"] = K
                builtin = {"logistic": {"objective": "binary:logistic", "base_score": 0.5},
                           "squared_error": {"objective": "reg:squarederror"},
                           "softmax": {"objective": "multi:softprob"}}[kind]
                fast = {"logistic": flx.logistic, "squared_error": flx.squared_error,
                        "softmax": lambda: flx.softmax(K)}[kind]()
                report("XGBoost", kind, n, rounds,
                       lambda obj, p=params, b=builtin, d=dtrain: xgb.train({**p, **({} if obj else b)}, d, rounds,
                                                                            obj=obj),
                       Timed(numpy_native(np_fn)), Timed(fast))
            if lgb is not None:
                dset = lgb.Dataset(X, y, params={"verbose": -1}).construct()
                params = {"num_threads": threads, "num_leaves": 63, "learning_rate": 0.1, "verbose": -1,
                          "metric": "None", "boost_from_average": False}
                if kind == "softmax":
                    params["num_class"] = K
                builtin = {"logistic": "binary", "squared_error": "regression", "softmax": "multiclass"}[kind]
                fast = {"logistic": fll.logistic, "squared_error": fll.squared_error,
                        "softmax": lambda: fll.softmax(K)}[kind]()
                np_obj = numpy_native(np_fn)
                if kind == "softmax":  # LightGBM's (n, K) view; the NumPy result is copied by LightGBM
                    np_obj = numpy_native(numpy_softmax_lgb)
                report("LightGBM", kind, n, rounds,
                       lambda obj, p=params, b=builtin, d=dset: lgb.train({**p, "objective": obj or b}, d, rounds),
                       Timed(np_obj), Timed(fast))


def numpy_softmax_lgb(x, y):
    grad, hess = numpy_softmax(x, y)
    k = x.shape[1]
    return grad, hess * (k / (k - 1) / 2.0)  # LightGBM's K / (K - 1) p (1 - p)


def report(library, kind, n, rounds, train, np_obj, fast_obj):
    times = {}
    for key, obj in (("builtin", None), ("numpy", np_obj), ("fastloss", fast_obj)):
        t0 = time.perf_counter()
        train(obj)
        times[key] = time.perf_counter() - t0
    share = {k: o.seconds / times[k] for k, o in (("numpy", np_obj), ("fastloss", fast_obj))}
    per_round = {k: o.seconds / max(o.calls, 1) for k, o in (("numpy", np_obj), ("fastloss", fast_obj))}
    print(f"| {library} | {kind}{' K=5' if kind == 'softmax' else ''} | {n:.0e} | {fmt_time(times['builtin'])} "
          f"| {fmt_time(times['numpy'])} ({share['numpy']:.1%}) | {fmt_time(times['fastloss'])} ({share['fastloss']:.1%}) "
          f"| {per_round['numpy'] * 1e3:.3g} -> {per_round['fastloss'] * 1e3:.3g} "
          f"({per_round['numpy'] / per_round['fastloss']:.1f}x) |", flush=True)


# --------------------------------------------------------------------------- main


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1e5 and 1e6 samples; training at 1e5 rows")
    parser.add_argument("--no-training", action="store_true", help="the objective timings only")
    args = parser.parse_args(argv)
    cores = core.usable_cores()
    threads = (1, cores) if cores > 1 else (1,)
    sizes = (100_000, 1_000_000) if args.quick else (100_000, 1_000_000, 10_000_000)
    train_sizes = (100_000,) if args.quick else (100_000, 1_000_000)
    profile = core.QUICK if args.quick else core.Profile(sample_s=2e-3, min_samples=5, max_samples=21, budget_s=0.3)
    facts = core.backend_facts()
    # (the test extra installs XGBoost's CPU-only distribution, "xgboost-cpu")
    versions = {m: next(filter(None, map(core._installed_version, dists)), None) for m, dists in
                (("xgboost", ("xgboost", "xgboost-cpu")), ("lightgbm", ("lightgbm",)),
                 ("scikit-learn", ("scikit-learn",)))}
    load = core.other_load()
    print(f"# fastloss boosting benchmark: {' '.join([os.path.basename(sys.argv[0])] + (argv or sys.argv[1:]))}")
    print(f"{core.cpu_model()}, {cores} usable cores; fastloss {facts['fastloss']} backend {facts['backend']} "
          f"SIMD {facts['simd']} OpenMP {facts['openmp']}; numpy {np.__version__}; "
          + ", ".join(f"{k} {v}" for k, v in versions.items())
          + (f"; other processes keep {load:.1f} CPUs busy" if load is not None else ""))
    if fastloss.get_backend() != "cython":
        print("WARNING: fastloss runs on its NumPy backend: these are not the compiled kernels' numbers")
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    objective_part(sizes, threads, profile, rng)
    if not args.no_training:
        training_part(train_sizes, cores, rng)
    print(f"\n(total {time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
