"""The implementations the benchmark times, as ready-to-call runners.

A *competitor* is fastloss itself or one of its baselines. ``load_competitors`` imports
the optional ones (PyTorch, scikit-learn, JAX) and reports the missing ones with a one-line
reason instead of failing. ``Competitor.runner(variant, x, t, threads)`` builds everything
a timed call needs (output buffers, tensors, jitted functions) *outside* the timed region
and returns a ``Runner``: ``call()`` is what is timed, ``result()`` returns ``(loss, grad)``
in fastloss's convention (mean loss, gradient of the mean) to check the competitor computes
the same thing before it is timed.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import partial
from typing import Callable

import numpy as np

from . import cases


@dataclass
class Runner:
    call: Callable[[], object]  # the timed call
    result: Callable[[], tuple] | None = None  # () -> (loss: float, grad: ndarray), or None


@dataclass
class Competitor:
    key: str  # JSON key and --against name
    label: str  # column header
    description: str  # what is timed, for the legend
    version: str
    build: Callable  # (variant, x, t, threads) -> Runner | None (None: no such loss)
    threaded: bool = False  # honours the thread count of the row
    all_cores_only: bool = False  # cannot be limited to fewer threads: timed in all-core rows only

    def runner(self, variant, x, t, threads):
        return self.build(variant, x, t, threads)


# --------------------------------------------------------------------------- fastloss


def _fastloss_module():
    import fastloss

    return fastloss


def _build_fastloss(variant, x, t, threads):
    fl = _fastloss_module()
    fn = getattr(fl, variant.loss + "_grad")
    buf = np.empty_like(x)  # allocated once, outside the timed region, as in a training loop
    call = partial(fn, x, t, n_threads=threads, out=buf)

    def result():
        loss, grad = call()
        return float(loss), grad.copy()

    return Runner(call, result)


def _build_fastloss_loss(variant, x, t, threads):
    fl = _fastloss_module()
    return Runner(partial(getattr(fl, variant.loss), x, t, n_threads=threads))


def build_fastloss_no_out(variant, x, t, threads):
    fl = _fastloss_module()
    return Runner(partial(getattr(fl, variant.loss + "_grad"), x, t, n_threads=threads))


def _build_numpy(variant, x, t, threads):
    fn = cases.numpy_function(variant.loss)
    if fn is None:  # no plain-NumPy version of this loss: the NumPy backend is the baseline
        return None
    call = partial(fn, x, t)

    def result():
        loss, grad = call()
        return float(loss), grad

    return Runner(call, result)


def _build_numpy_backend(variant, x, t, threads):
    from .. import numpy_backend

    buf = np.empty_like(x)
    call = partial(getattr(numpy_backend, variant.loss + "_grad"), x, t, out=buf)

    def result():
        loss, grad = call()
        return float(loss), grad.copy()

    return Runner(call, result)


FASTLOSS = Competitor(
    "fastloss", "fastloss", "fastloss NAME_grad(x, t, n_threads=thr, out=buf)", "", _build_fastloss, True)
FASTLOSS_LOSS = Competitor(
    "fastloss_loss", "loss only", "fastloss NAME(x, t, n_threads=thr): the loss alone", "",
    _build_fastloss_loss, True)


# --------------------------------------------------------------------------- optional ones


def _load_torch():
    torch = importlib.import_module("torch")
    F = importlib.import_module("torch.nn.functional")

    def build(variant, x, t, threads):
        loss_fn = cases.torch_function(variant.loss, F)
        if loss_fn is None:
            return None
        # Created once: the input is a leaf sharing x's memory; the gradient is set to None
        # before every call (what optimizer.zero_grad() does by default).
        xt = torch.from_numpy(x).requires_grad_(True)
        tt = torch.from_numpy(t)

        def call():
            xt.grad = None
            loss = loss_fn(F, xt, tt)
            loss.backward()
            return loss

        def result():
            loss = call()
            return float(loss.detach()), xt.grad.numpy().copy()

        return Runner(call, result)

    return torch.__version__, build


def _load_torch_adapter():
    torch = importlib.import_module("torch")
    flt = importlib.import_module("fastloss.torch")

    def build(variant, x, t, threads):
        fn = getattr(flt, variant.loss)
        fl, api = _fastloss_module(), importlib.import_module("fastloss._api")
        # As the torch baseline: a leaf sharing x's memory, .grad set to None before each call.
        # The adapter has no n_threads: a call makes the row's count fastloss's default (a
        # comparison when it is already; core.run restores the previous default, result here).
        xt = torch.from_numpy(x).requires_grad_(True)
        tt = torch.from_numpy(t)

        def call():
            if api._num_threads != threads:
                fl.set_num_threads(threads)
            xt.grad = None
            loss = fn(xt, tt)
            loss.backward()
            return loss

        def result():
            previous = fastloss_threads()
            try:
                loss = call()
            finally:
                fl.set_num_threads(previous)
            return float(loss.detach()), xt.grad.numpy().copy()

        return Runner(call, result)

    return torch.__version__, build


def _load_sklearn():
    import sklearn
    from sklearn._loss import loss as sk_loss

    def build(variant, x, t, threads):
        entry = cases.SKLEARN.get(variant.loss)
        if entry is None:
            return None
        kwargs = dict(entry.kwargs)
        if variant.classes is not None:
            kwargs["n_classes"] = variant.classes
        obj = getattr(sk_loss, entry.cls)(**kwargs)
        y = t.astype(x.dtype)  # sklearn takes targets (class labels too) as floats of x's dtype
        n_terms = x.shape[0]
        loss_out = np.empty(n_terms, x.dtype)
        grad_out = np.empty_like(x)

        def call():
            obj.loss_gradient(y, x, loss_out=loss_out, gradient_out=grad_out, n_threads=threads)
            return loss_out.mean()

        def result():
            loss = call()
            return entry.factor * float(loss), grad_out * (entry.factor / n_terms)

        return Runner(call, result)

    return sklearn.__version__, build


def _load_jax():
    jax = importlib.import_module("jax")
    jax.config.update("jax_enable_x64", True)  # float64 and int64 as given, not downcast
    jnp = importlib.import_module("jax.numpy")

    def build(variant, x, t, threads):
        f = cases.JAX.get(variant.loss)
        if f is None:
            return None
        value_and_grad = jax.jit(jax.value_and_grad(lambda a, b: f(jnp, jax.nn, a, b)))
        xj, tj = jax.device_put(x), jax.device_put(t)

        def call():
            return jax.block_until_ready(value_and_grad(xj, tj))

        call()  # compile here, outside the timed region

        def result():
            loss, grad = call()
            return float(loss), np.asarray(grad)

        return Runner(call, result)

    return jax.__version__, build


OPTIONAL = {
    "torch": ("torch", "PyTorch CPU: F.NAME(x, t) forward + .backward() (x.grad = None before each call)",
              _load_torch, True, False),
    "torch_adapter": ("fastloss.torch", "fastloss.torch.NAME(x, t) forward + .backward() (x.grad = None "
                      "before each call), the PyTorch adapter", _load_torch_adapter, True, False),
    "sklearn": ("sklearn", "scikit-learn sklearn._loss: loss_gradient(..., loss_out, gradient_out, "
                "n_threads=thr) + mean of the per-sample losses", _load_sklearn, True, False),
    "jax": ("jax", "JAX: jax.jit(jax.value_and_grad(f))(x, t) + block_until_ready (XLA's own "
            "thread pool: all-core rows only)", _load_jax, False, True),
}

NUMPY = Competitor("numpy", "numpy", "plain NumPy loss + gradient, as a user writes it "
                   "(fastloss/bench/cases.py)", np.__version__, _build_numpy)
NUMPY_BACKEND = Competitor("numpy_backend", "np-backend", "fastloss.numpy_backend.NAME_grad(x, t, out=buf)",
                           np.__version__, _build_numpy_backend)

BASELINES = ("numpy", "numpy_backend", "torch", "torch_adapter", "sklearn", "jax")  # the --against choices


def load_competitors(names) -> tuple[list[Competitor], dict[str, str]]:
    """The baselines among ``names`` that import, and {name: why not} for the others."""
    loaded, skipped = [], {}
    for name in names:
        if name == "numpy":
            loaded.append(NUMPY)
        elif name == "numpy_backend":
            loaded.append(NUMPY_BACKEND)
        else:
            label, description, load, threaded, all_cores = OPTIONAL[name]
            try:
                version, build = load()
            except ImportError as exc:
                skipped[name] = f"not installed ({exc.__class__.__name__}: {exc})".splitlines()[0]
                continue
            except Exception as exc:  # a broken install must not break the bench
                skipped[name] = f"failed to import ({exc.__class__.__name__}: {exc})".splitlines()[0]
                continue
            loaded.append(Competitor(name, label, description, version, build, threaded, all_cores))
    return loaded, skipped


def set_torch_threads(n):
    """torch.set_num_threads(n) when torch is already imported; returns the previous count."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None:
        return None
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    return previous


def fastloss_threads():
    """fastloss's default thread count as set (None: OpenMP's), to restore after the run."""
    from .. import _api

    return _api._num_threads


# --------------------------------------------------------------------------- agreement


def agrees(reference, candidate, dtype) -> bool:
    """Whether a competitor's (loss, grad) matches fastloss's: same loss and gradient to the
    dtype's accuracy (the gradient compared relative to its largest magnitude)."""
    loss_ref, grad_ref = reference
    loss, grad = candidate
    rtol = 1e-4 if np.dtype(dtype) == np.float32 else 1e-9
    grad = np.asarray(grad)
    if grad.shape != grad_ref.shape:
        return False
    if not abs(loss - loss_ref) <= rtol * max(abs(loss_ref), 1e-300):
        return False
    scale = float(np.max(np.abs(grad_ref))) if grad_ref.size else 0.0
    if grad_ref.size == 0:
        return True
    return float(np.max(np.abs(grad.astype(np.float64) - grad_ref))) <= rtol * max(scale, 1e-300)
