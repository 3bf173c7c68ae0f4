"""The library-independent part of the gradient-boosting adapters (``fastloss.xgboost``,
``fastloss.lightgbm``).

An objective here is a small object that, given the booster's raw predictions (margins), the
labels and the optional sample weights, fills two reusable float32 buffers with the per-sample
gradient and Hessian of its loss through one ``NAME_grad_hess(..., reduction="sum",
out=(grad, hess))`` call, and evaluates the matching metric (the weighted mean of the loss).
The adapters only translate the libraries' calling conventions and layouts.

Scaling conventions. The boosting libraries minimise *half* the squared error and *half*
the unit deviances (gradient ``r``, Hessian ``1`` for squared error), while fastloss's losses
are the full ones (``mse_loss``: gradient ``2 r``, Hessian ``2``). An objective passes the
sample weight times ``weight_scale`` (0.5 there) as fastloss's ``weight=``, so its gradient and
Hessian are exactly the built-in objective's; a scalar weight costs nothing, a per-sample
weight one multiplication into a reused buffer. The booster's hyperparameters
(``min_child_weight``, ``lambda``, ``learning_rate``) then mean what they mean with the
built-in objective. ``hess_scale`` multiplies the Hessian alone: the Poisson objectives of both
libraries use ``exp(raw + max_delta_step)`` as Hessian, and their softmax objectives
``2 p (1 - p)`` (XGBoost) or ``K / (K - 1) p (1 - p)`` (LightGBM) instead of the exact
``p (1 - p)``; that costs one pass over the Hessian.

Buffers. The gradient and Hessian are written into buffers allocated on the first call and
reused on every later call of the same shape and dtype (float32 from the adapters): the arrays returned by one boosting round are
overwritten by the next (the libraries copy them into their own storage before that).
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field

import numpy as np

import fastloss as _fl


LIBRARIES = {"xgboost": "XGBoost", "lightgbm": "LightGBM", "catboost": "CatBoost"}


def require(module: str):
    """Import the boosting library an adapter serves (``fastloss.<module>``, when a factory is
    called), or raise an ImportError naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"fastloss.{module} needs {LIBRARIES[module]}, which is not installed: pip install "
            f"'fastloss[{module}]' (or pip install {module}); the import failed with: {exc}") from exc


class _Converted:
    """Arrays converted once per data set: the result of converting ``src`` is reused while
    the caller passes the very same object again (LightGBM hands back its cached label and
    weight arrays every round). The reference held here keeps ``src`` alive, so an identity
    match cannot be a new array at a recycled address. A new object is converted into the
    same buffer when the shape allows (XGBoost returns a fresh copy every round)."""

    def __init__(self):
        self._slots = {}

    def get(self, slot, src, dtype, shape, convert):
        hit = self._slots.get(slot)
        if hit is not None and hit[0] is src:
            return hit[1]
        buf = hit[1] if hit is not None and hit[1].shape == shape and hit[1].dtype == dtype else None
        if buf is None:
            buf = np.empty(shape, dtype)
        convert(src, buf)
        self._slots[slot] = (src, buf)
        return buf


@dataclass
class Elementwise:
    """One elementwise objective: ``fastloss.<loss>_grad_hess(preds, label, **kwargs)``.

    ``weight_scale`` multiplies the sample weights (0.5: the libraries' half loss),
    ``hess_scale`` the Hessian alone, ``min_hessian`` floors the Hessian fastloss returns
    (focal loss, whose exact second derivative is negative where a confident prediction is
    wrong; it takes no weight, so that is the unweighted Hessian).
    ``takes_weight``: the fastloss loss has a ``weight=`` keyword; otherwise the sample
    weights multiply the gradient and Hessian in place (one extra pass).
    The metric is ``sum(w * metric_loss) / sum(w)`` with ``fastloss.<metric_loss>`` and
    ``metric_kwargs``."""

    loss: str
    kwargs: dict = field(default_factory=dict)
    weight_scale: float = 1.0
    hess_scale: float = 1.0
    min_hessian: float | None = None
    takes_weight: bool = True
    metric_name: str = ""
    metric_loss: str = ""
    metric_kwargs: dict = field(default_factory=dict)
    metric_takes_weight: bool = True


def _no_loss_kernel(loss: str, kwargs: dict):
    """``(fast, policy)``: the compiled kernel's fast method and the Hessian policy to give it,
    when the compiled backend is in use and the objective's parameters are the registry's
    defaults; else ``(None, None)``. Its ``want=3`` computes the gradient and Hessian alone
    (the loss, which a booster does not ask for, is not computed: Poisson's deviance costs a
    log per sample), with the bits of ``NAME_grad_hess`` (tests/runtime/test_fast_path.py);
    it returns None for any call it does not take, which then goes to ``NAME_grad_hess``."""
    if _fl.get_backend() != "cython":
        return None, None
    from fastloss import kernels
    from fastloss._registry import BY_NAME

    spec = BY_NAME[loss]
    extra = set(kwargs) - {p.name for p in spec.params} - {"hessian"}
    if extra or any(p.name in kwargs and kwargs[p.name] != p.default for p in spec.params):
        return None, None
    policy = kwargs.get("hessian", spec.hessian_policy if spec.hessian_policy is not None else "exact")
    if isinstance(policy, (int, float)) and not isinstance(policy, bool):
        policy = float(policy)
    return kernels.KERNELS[spec.kernel_name].fast, policy


class ElementwiseObjective:
    """Computes gradient and Hessian of an ``Elementwise`` spec into reused buffers."""

    def __init__(self, spec: Elementwise, n_threads: int | None = None):
        self.spec = spec
        self.n_threads = n_threads
        self._grad_hess = getattr(_fl, spec.loss + "_grad_hess")
        self._no_loss, self._policy = _no_loss_kernel(spec.loss, spec.kwargs)
        self._metric_fn = getattr(_fl, spec.metric_loss or spec.loss)
        self._grad = self._hess = None
        self._converted = _Converted()

    def fresh(self):
        """The same objective without buffers (what a copy of an adapter gets)."""
        return ElementwiseObjective(self.spec, self.n_threads)

    def __reduce__(self):  # copies and pickles: the configuration, not the buffers
        return (ElementwiseObjective, (self.spec, self.n_threads))

    @property
    def buffers(self):
        """The (grad, hess) buffers of the last call (None before the first)."""
        return self._grad, self._hess

    def _buffers(self, shape, dtype):
        if self._grad is None or self._grad.shape != shape or self._grad.dtype != dtype:
            self._grad = np.empty(shape, dtype)
            self._hess = np.empty(shape, dtype)
        return self._grad, self._hess

    def _target(self, label, preds):
        """The labels in the compute dtype and shape of ``preds`` (converted once per data set
        when they are not already)."""
        label = np.asarray(label)
        if label.size != preds.size:
            raise ValueError(f"got {label.size} labels for {preds.size} predictions")
        if label.dtype == preds.dtype and label.shape == preds.shape:
            return label
        if label.dtype == preds.dtype:
            return label.reshape(preds.shape)
        return self._converted.get("label", label, preds.dtype, preds.shape,
                                   lambda s, b: np.copyto(b, s.reshape(b.shape), casting="unsafe"))

    def _weight(self, weight, preds, scale):
        """``scale * weight`` in the compute dtype, shaped to broadcast against ``preds``
        (samples on the first axis), reused while the same weight array comes back."""
        n = preds.shape[0] if preds.ndim else 1
        weight = np.asarray(weight)
        if weight.size != n:
            raise ValueError(f"got {weight.size} sample weights for {n} samples")
        shape = (n,) + (1,) * max(preds.ndim - 1, 0)
        if scale == 1.0 and weight.dtype == preds.dtype:
            return weight.reshape(shape)
        return self._converted.get(("weight", scale), weight, preds.dtype, shape,
                                   lambda s, b: np.multiply(s.reshape(b.shape), scale, out=b, casting="unsafe"))

    def grad_hess(self, preds, label, weight=None):
        """Gradient and Hessian of the objective at the raw predictions ``preds`` (a C-contiguous
        float32 array from the adapters; float64 computes into float64 buffers)."""
        spec = self.spec
        if weight is not None and np.size(weight) == 0:
            weight = None
        target = self._target(label, preds)
        grad, hess = self._buffers(preds.shape, preds.dtype)
        kwargs = dict(spec.kwargs)
        post = None  # sample weights applied after the call
        if spec.takes_weight:
            if weight is not None:
                kwargs["weight"] = self._weight(weight, preds, spec.weight_scale)
            elif spec.weight_scale != 1.0:
                kwargs["weight"] = spec.weight_scale
        elif weight is not None:
            post = self._weight(weight, preds, spec.weight_scale)
        elif spec.weight_scale != 1.0:
            post = spec.weight_scale
        done = None
        if self._no_loss is not None:  # the kernel without the loss, else the public function
            done = self._no_loss(preds, target, kwargs.get("weight"), "sum", self.n_threads, (grad, hess), 3,
                                 self._policy)
        if done is None:
            self._grad_hess(preds, target, reduction="sum", n_threads=self.n_threads, out=(grad, hess), **kwargs)
        if spec.min_hessian is not None:
            np.maximum(hess, spec.min_hessian, out=hess)
        if post is not None:
            np.multiply(grad, post, out=grad)
            np.multiply(hess, post if spec.hess_scale == 1.0 else post * spec.hess_scale, out=hess)
        elif spec.hess_scale != 1.0:
            np.multiply(hess, spec.hess_scale, out=hess)
        return grad, hess

    def metric(self, preds, label, weight=None) -> float:
        """The weighted mean of the metric loss at the raw predictions ``preds`` (any float
        dtype; float64 predictions are evaluated in float64)."""
        spec = self.spec
        preds = np.asarray(preds)
        if weight is not None and np.size(weight) == 0:
            weight = None
        target = np.asarray(label).reshape(preds.shape)
        if weight is None:
            total = self._metric_fn(preds, target, reduction="sum", n_threads=self.n_threads, **spec.metric_kwargs)
            denom = preds.size
        else:
            w = np.asarray(weight, np.float64)
            shape = (w.size,) + (1,) * max(preds.ndim - 1, 0)
            if spec.metric_takes_weight:
                total = self._metric_fn(preds, target, weight=w.reshape(shape), reduction="sum",
                                        n_threads=self.n_threads, **spec.metric_kwargs)
            else:
                per = self._metric_fn(preds, target, reduction="none", n_threads=self.n_threads, **spec.metric_kwargs)
                total = np.sum(per * w.reshape(shape), dtype=np.float64)
            denom = float(w.sum()) * (preds.size // max(w.size, 1))
        return float(total) / denom


class SoftmaxObjective:
    """Softmax cross-entropy over K classes for float32 margins, (n, K) row-major (XGBoost)
    or, with ``class_major=True``, (K, n) class-major (LightGBM's own layout).

    Class-major margins are ``cross_entropy``'s (N, C, d) layout with N = 1, C = K, d = n:
    the kernel reads and writes them as they are (16 samples at a time across SIMD lanes,
    the same bits as the row-major call), so LightGBM's scores need no transpose.
    ``fastloss.cross_entropy_grad_hess`` takes class weights only, so sample weights scale
    the gradient and Hessian of each sample in place afterwards (one extra pass over each);
    ``hess_scale`` is folded into that pass (or is a pass of its own without weights)."""

    def __init__(self, *, class_weight=None, hess_scale: float | None = 1.0, n_threads: int | None = None):
        self.class_weight = None if class_weight is None else np.asarray(class_weight, np.float64)
        if self.class_weight is not None and (self.class_weight.ndim != 1 or not np.all(self.class_weight >= 0)):
            raise ValueError("class_weight must be a vector of non-negative numbers, one per class")
        # None: LightGBM's K / (K - 1), known at the first call
        self.hess_scale = None if hess_scale is None else _positive("hess_scale", hess_scale)
        self.n_threads = n_threads
        self._grad = self._hess = None
        self._rowscale = None
        self._converted = _Converted()

    def fresh(self):
        """The same objective without buffers (what a copy of an adapter gets)."""
        return SoftmaxObjective(class_weight=self.class_weight, hess_scale=self.hess_scale, n_threads=self.n_threads)

    def __reduce__(self):  # copies and pickles: the configuration, not the buffers
        return (_softmax_objective, (self.class_weight, self.hess_scale, self.n_threads))

    @property
    def buffers(self):
        return self._grad, self._hess

    def _buffers(self, shape, dtype):
        if self._grad is None or self._grad.shape != shape or self._grad.dtype != dtype:
            self._grad = np.empty(shape, dtype)
            self._hess = np.empty(shape, dtype)
        return self._grad, self._hess

    def labels(self, label, n):
        """Class indices as int64 (what the kernels read: the compiled fast path takes them
        as they are), converted once per data set; float labels must hold integers (XGBoost
        and LightGBM store labels as float32)."""
        label = np.asarray(label)
        if label.size != n:
            raise ValueError(f"got {label.size} labels for {n} samples")
        if label.dtype == np.int64:
            return label.reshape(n)

        def convert(src, buf):
            np.copyto(buf, src.reshape(n), casting="unsafe")
            if not np.array_equal(buf, src.reshape(n)):
                bad = src.reshape(n)[buf != src.reshape(n)][0]
                raise ValueError(f"softmax labels must be integer class indices, got {bad!r}")

        return self._converted.get("label", label, np.dtype(np.int64), (n,), convert)

    def grad_hess(self, preds, label, weight=None, *, class_major=False):
        """Gradient and Hessian of (n, K) margins, or of (K, n) ones with ``class_major``,
        returned in the margins' layout (reused buffers)."""
        k, n = preds.shape if class_major else preds.shape[::-1]
        if self.class_weight is not None and self.class_weight.shape != (k,):
            raise ValueError(f"class_weight has shape {self.class_weight.shape}, expected ({k},)")
        target = self.labels(label, n)
        scale = k / (k - 1) if self.hess_scale is None else self.hess_scale
        grad, hess = self._buffers(preds.shape, preds.dtype)
        if class_major:  # (1, K, n) input, (1, n) targets: see the class docstring
            _fl.cross_entropy_grad_hess(preds.reshape(1, k, n), target.reshape(1, n), weight=self.class_weight,
                                        reduction="sum", n_threads=self.n_threads,
                                        out=(grad.reshape(1, k, n), hess.reshape(1, k, n)))
        else:
            _fl.cross_entropy_grad_hess(preds, target, weight=self.class_weight, reduction="sum",
                                        n_threads=self.n_threads, out=(grad, hess))
        if weight is not None and np.size(weight) == 0:
            weight = None
        if weight is not None:
            w = np.asarray(weight)
            if w.size != n:
                raise ValueError(f"got {w.size} sample weights for {n} samples")
            wshape = (n,) if class_major else (n, 1)  # broadcast over the class axis
            w = w.reshape(wshape)
            np.multiply(grad, w, out=grad, casting="unsafe")
            if scale != 1.0:
                if self._rowscale is None or self._rowscale.shape != wshape or self._rowscale.dtype != preds.dtype:
                    self._rowscale = np.empty(wshape, preds.dtype)
                np.multiply(w, scale, out=self._rowscale, casting="unsafe")
                w = self._rowscale
            np.multiply(hess, w, out=hess, casting="unsafe")
        elif scale != 1.0:
            np.multiply(hess, scale, out=hess)
        return grad, hess

    def metric(self, preds, label, weight=None, *, class_major=False) -> float:
        """Weighted mean cross-entropy (multiclass log loss) of (n, K) raw margins, or of
        (K, n) ones with ``class_major``."""
        preds = np.asarray(preds)
        k, n = preds.shape if class_major else preds.shape[::-1]
        target = self.labels(label, n)
        if class_major:  # cross_entropy's (1, K, n) layout, as grad_hess
            preds, target = preds.reshape(1, k, n), target.reshape(1, n)
        if weight is not None and np.size(weight) == 0:
            weight = None
        if weight is None and self.class_weight is None:
            return float(_fl.cross_entropy(preds, target, reduction="sum", n_threads=self.n_threads)) / n
        # per sample: class_weight[y] * (-log p_y); the mean divides by the total weight
        # sum(sample_weight * class_weight[y]), as cross_entropy's "mean" does.
        per = _fl.cross_entropy(preds, target, weight=self.class_weight, reduction="none",
                                n_threads=self.n_threads).astype(np.float64).reshape(n)
        target = target.reshape(n)
        sw = np.ones(n) if weight is None else np.asarray(weight, np.float64).reshape(n)
        total_weight = sw if self.class_weight is None else sw * self.class_weight[target]
        return float(np.dot(per, sw)) / float(total_weight.sum())


def _softmax_objective(class_weight, hess_scale, n_threads):
    return SoftmaxObjective(class_weight=class_weight, hess_scale=hess_scale, n_threads=n_threads)


# --------------------------------------------------------------------------- the objectives

def _positive(name, value, *, zero_ok=False):
    value = float(value)
    if not (value > 0 or (zero_ok and value == 0)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a {'non-negative' if zero_ok else 'positive'} finite number, got {value!r}")
    return value


def _hessian_policy(hessian):
    if isinstance(hessian, str):
        if hessian != "exact":
            raise ValueError(f"hessian must be 'exact' or a positive number, got {hessian!r}")
        return hessian
    return _positive("hessian", hessian)


def squared_error() -> Elementwise:
    return Elementwise("mse_loss", weight_scale=0.5, metric_name="mse", metric_loss="mse_loss")


def absolute_error(hessian=1.0) -> Elementwise:
    return Elementwise("l1_loss", {"hessian": _hessian_policy(hessian)}, metric_name="mae", metric_loss="l1_loss")


def huber(delta=1.0, hessian=1.0) -> Elementwise:
    delta = _positive("delta", delta)
    return Elementwise("huber_loss", {"delta": delta, "hessian": _hessian_policy(hessian)},
                       metric_name="huber", metric_loss="huber_loss", metric_kwargs={"delta": delta})


def logistic(scale_pos_weight=None) -> Elementwise:
    kwargs = {}
    if scale_pos_weight is not None:
        kwargs["pos_weight"] = _positive("scale_pos_weight", scale_pos_weight)
    return Elementwise("binary_cross_entropy_with_logits", kwargs, metric_name="logloss",
                       metric_loss="binary_cross_entropy_with_logits")


def poisson(max_delta_step=0.7) -> Elementwise:
    # The gradient and Hessian of half the Poisson deviance on the log link are those of
    # poisson_nll_loss (log_input=True): exp(x) - y and exp(x), the boosting libraries' own
    # formulas, one exp per sample. (poisson_deviance's gradient is extra-precise near
    # mu = y, in the log domain: 5-8 ns per sample, slower than the NumPy objective.) It
    # takes no weight: sample weights multiply the gradient and Hessian afterwards.
    mds = _positive("max_delta_step", max_delta_step, zero_ok=True)
    return Elementwise("poisson_nll_loss", hess_scale=math.exp(mds), takes_weight=False,
                       metric_name="poisson_deviance", metric_loss="poisson_deviance")


def gamma() -> Elementwise:
    return Elementwise("gamma_deviance", weight_scale=0.5, metric_name="gamma_deviance", metric_loss="gamma_deviance")


def tweedie(variance_power=1.5) -> Elementwise:
    p = float(variance_power)
    if not 1.0 <= p <= 2.0:
        raise ValueError(f"variance_power must be in [1, 2], got {variance_power!r}")
    return Elementwise("tweedie_deviance", {"power": p}, weight_scale=0.5,
                       metric_name=f"tweedie_deviance@{p:g}", metric_loss="tweedie_deviance",
                       metric_kwargs={"power": p})


def quantile(alpha=0.5, hessian=1.0) -> Elementwise:
    a = float(alpha)
    if not 0.0 < a < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    return Elementwise("pinball_loss", {"quantile": a, "hessian": _hessian_policy(hessian)},
                       metric_name=f"pinball@{a:g}", metric_loss="pinball_loss", metric_kwargs={"quantile": a})


def focal(alpha=0.25, gamma=2.0, min_hessian=1e-6) -> Elementwise:
    alpha, gamma = float(alpha), _positive("gamma", gamma, zero_ok=True)
    floor = None if min_hessian is None else _positive("min_hessian", min_hessian, zero_ok=True)
    kw = {"alpha": alpha, "gamma": gamma}
    return Elementwise("sigmoid_focal_loss", kw, min_hessian=floor, takes_weight=False,
                       metric_name="focal", metric_loss="sigmoid_focal_loss", metric_kwargs=kw,
                       metric_takes_weight=False)


def log_cosh() -> Elementwise:
    return Elementwise("log_cosh_loss", metric_name="log_cosh", metric_loss="log_cosh_loss")


def pseudo_huber(delta=1.0) -> Elementwise:
    delta = _positive("delta", delta)
    return Elementwise("pseudo_huber_loss", {"delta": delta}, metric_name="pseudo_huber",
                       metric_loss="pseudo_huber_loss", metric_kwargs={"delta": delta})


ELEMENTWISE = {
    "squared_error": squared_error,
    "absolute_error": absolute_error,
    "huber": huber,
    "logistic": logistic,
    "poisson": poisson,
    "gamma": gamma,
    "tweedie": tweedie,
    "quantile": quantile,
    "focal": focal,
    "log_cosh": log_cosh,
    "pseudo_huber": pseudo_huber,
}
