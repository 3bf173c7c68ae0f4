"""The one place in the tests that knows the losses one by one: a ``LossReference`` per loss
of ``fastloss._registry``, in ``REFERENCES``.

Each record holds every per-loss fact the tests need and the registry row does not say:
how to make valid inputs (``cases``), the float64 formula with its gradient, the exact
(mpmath) term, the PyTorch reference when ``torch.nn.functional`` lacks the loss, where
the gradient may be non-zero, the documented sign of the gradient and where the loss is
non-negative, the accuracy inputs and ULP bounds, the documented values at the kinks, the
inputs whose terms approach the float maximum, and the exceptions to PyTorch's accuracy.
Everything that follows from the registry row (kind, domains, weights, parameters and their
domains, ignore_index, probability targets) is derived where it is used, not restated here.

Adding a loss to the registry means adding its record here, and nothing else in tests/:
``tests/contract/test_loss_references.py`` fails, naming the loss and the missing fields,
until the record exists and is complete. Until then the other modules leave that loss out
of what they derive from the records (``referenced_losses``), and run on.

Building blocks (no loss named there): ``loss_inputs.py`` (random and adversarial inputs)
and ``loss_maths.py`` (float64, mpmath and PyTorch pieces). The machinery that runs the
references is ``reference.py``; the test cases are made by ``cases.py``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, fields
from typing import Callable

import numpy as np

from fastloss._registry import BY_NAME, LOSSES
from loss_inputs import (CLASS_SHAPES, CLASS_WEIGHT, ELEMENTWISE_SHAPES, F32, F64, KINK_GAP, WEIGHTS,
                         LossCases, away_from, class_inputs, class_probabilities, class_targets,
                         class_weight, farray, finite_residual, grid, hinge_pairs, ignored, margin_rows,
                         moderate, moderate_limit, residual_pairs, signed, signs, soft_labels, spatial,
                         summed_class_inputs, with_pos_weight, with_probability_targets, with_weight)
from loss_maths import (BCE_GRAD_EPSILON, broadcast, exact_sigmoid, exact_softplus, exact_sub, exact_times,
                        expit, log_softmax_rows, mpmath_module, neg_log_softmax, rows, sign_torch, softplus,
                        times, torch)


# =========================================================================== the record


class _Required:
    def __repr__(self):
        return "REQUIRED"


REQUIRED = _Required()  # a field every record must give (test_loss_references checks it)


class IncompleteReference(LookupError):
    """A test needed a fact the loss's record does not give."""


@dataclass(frozen=True)
class Kink:
    """A documented value at a kink: the per-element loss and the gradient ("none") of
    ``loss(x, target, **params)``. ``id`` names the test (default: loss and params)."""

    params: dict
    x: list
    target: list
    loss: list
    grad: list
    id: str | None = None


@dataclass(frozen=True, eq=False)
class LossReference:
    """Every per-loss fact of the tests, for the registry loss ``name``."""

    name: str

    # ----- inputs
    cases: LossCases = REQUIRED  # valid inputs, parameter combinations, shapes (cases.py)

    # ----- references (reference.py)
    # float64 formula: (x, t, **kwargs) -> (per-term losses, "mean" divisor, gradient of the
    # summed terms), arrays of float64, following PyTorch's documentation of the loss
    formula: Callable = REQUIRED
    # where the gradient may be non-zero (reference.depends_on): "everywhere", "active
    # terms" (margin - y x > 0), "kept samples" (target not ignored) or "kept targets"
    gradient_support: str = REQUIRED
    # the exact term (mpmath, reference.exact_terms); elementwise: (x, y, w, pw, params) ->
    # (loss, grad, terms); classes: (z, target, w, params) -> (loss, grad list, terms list),
    # ``terms`` the magnitude of the largest quantity the gradient subtracts (0 if none)
    exact: Callable = REQUIRED
    # float64 formula of the Hessian's diagonal (NAME_grad_hess, the exact policy):
    # (x, t, **kwargs) -> d2/dx2 of the summed weighted terms, same kwargs as ``formula``
    # (test_second_order.py: against fastloss, and against finite differences of
    # ``formula``'s gradient)
    hessian: Callable = REQUIRED
    # the magnitude of the terms the loss formula itself cancels, where no implementation in
    # the working precision keeps the loss's own relative accuracy (the deviances near their
    # optimum): (x, y, w, pw, params) -> mpf, elementwise losses; the loss's ULP error is then
    # measured against max(|loss|, that), as the gradient's against ``exact``'s ``terms``.
    # None: the loss is held to ULP of itself
    exact_loss_terms: Callable | None = None
    # PyTorch: None is torch.nn.functional.<name>; a loss PyTorch lacks gives its formula
    # written in torch, (x, t, *, reduction, **kwargs) -> tensor
    torch_formula: Callable | None = None
    # torch.nn.functional.<name> wants a weight of the input's shape: expand it first
    torch_expand_weight: bool = False

    # ----- documented properties (test_properties.py)
    # a condition on the target under which the loss is documented non-negative (given
    # non-negative weights); None: it may be negative whatever the target
    non_negative_if: Callable | None = REQUIRED
    # the documented sign of the gradient: "x - y", "-y", "hard targets", "x - log y" (the
    # deviances: the sign of mu - y) (elementwise), "target class" or "target class only"
    # (class indices); or, elementwise, a rule of its
    # own: (x, t, kwargs, grad) -> the mask of the components of the wrong sign (float64 x, t)
    gradient_sign: str | Callable = REQUIRED
    # the target holds probabilities in [0, 1] that the registry does not enforce (PyTorch
    # accepts any real target) and the input is a logit: tests draw targets in [0, 1]
    soft_labels: bool = False

    # ----- accuracy (test_accuracy.py)
    # ((id, builder(dtype) -> (x, t, kwargs)), ...): adversarial inputs, every parameter,
    # weight and target form of the loss among them
    accuracy_variants: tuple = REQUIRED
    # ULP bounds of the compiled kernels {float32: (loss, grad), float64: (loss, grad)}; a
    # bound may also be {SIMD level: (loss, grad)}
    ulp_bounds: dict = REQUIRED
    # the NumPy backend's bounds where they differ from ulp_bounds (same form)
    numpy_ulp_bounds: dict = field(default_factory=dict)
    # {dtype: (x, t)}: inputs where PyTorch, in that dtype, loses more than 1000 ULP
    torch_loses: dict = field(default_factory=dict)

    # ----- kinks (test_gradients.py): required when the registry formula has a kink
    kinks: tuple = ()

    # ----- extremes
    # (big float32 array of n values in [2e38, 3e38], n) -> (x, t, kwargs) whose every term
    # is about 2e38 to 3.4e38 (test_reductions); required unless the input is a probability
    huge_terms: Callable | None = None
    # (dtype, float max of dtype) -> [(x, t, kwargs, label)]: residuals, hinge arguments or
    # logits above half the float max whose exact sums do not overflow (test_adv_extremes)
    half_max_cases: Callable = REQUIRED
    # (x, t) -> bool per element (a row of class losses): where the NaN/inf test holds the
    # loss to its exact (mpmath) value instead of the reference (PyTorch loses precision or
    # gives NaN at a finite limit there); None: the reference everywhere (test_edge)
    held_to_exact: Callable | None = None
    # PyTorch gives NaN at the finite limits of non-finite inputs, targets or pos_weight:
    # the adversarial tests hold the loss to the exact limits there (adv_data_support)
    exact_limits: bool = False

    # ----- runtime
    # the kernels go through exp or log (fastloss/csrc/vecmath.hpp): the SIMD levels without
    # FMA may differ in the last bits (test_kernel_paths)
    exp_log: bool = REQUIRED

    def __repr__(self):
        return f"LossReference({object.__getattribute__(self, 'name')!r})"

    def __getattribute__(self, attr):
        value = object.__getattribute__(self, attr)
        if value is REQUIRED:
            raise IncompleteReference(
                f"the LossReference of {object.__getattribute__(self, 'name')!r} in tests/support/losses.py "
                f"gives no {attr!r}")
        return value

    @property
    def spec(self):
        return BY_NAME[self.name]

    @property
    def in_torch(self) -> bool:
        """torch.nn.functional has the loss (the PyTorch conventions apply to it)."""
        return self.torch_formula is None

    @property
    def targets_in_unit_interval(self) -> bool:
        """Elementwise targets are probabilities in [0, 1] (enforced, or soft labels)."""
        return self.spec.target_domain == "unit" or self.soft_labels

    def missing_fields(self) -> list[str]:
        """The fields this record must give and does not: REQUIRED ones, and the ones the
        registry row makes necessary (kinks, huge terms, a torch formula)."""
        raw = {f.name: object.__getattribute__(self, f.name) for f in fields(self)}
        missing = [name for name, value in raw.items() if value is REQUIRED]
        spec = BY_NAME.get(self.name)
        if spec is None:
            return missing
        if has_kink(spec) and not raw["kinks"]:
            missing.append("kinks")
        if spec.input_domain != "unit" and raw["huge_terms"] is None:
            missing.append("huge_terms")
        if torch is not None and raw["torch_formula"] is None:
            import torch.nn.functional as F

            if not hasattr(F, self.name):
                missing.append("torch_formula")
        return missing


def has_kink(spec) -> bool:
    """The registry formula has a max, clip, |.| or a case split: a kink to document."""
    return any(s in spec.formula for s in ("max", "|", "clip", " if "))


def always(t) -> bool:
    return True


# =========================================================================== residual losses
# mse_loss, l1_loss, huber_loss, smooth_l1_loss: input = target + r with r away from 0 and
# from the loss's kink (delta or beta).


def residual_inputs(kink_param=None, default=1.0):
    """Input = target + r with r away from 0 and from the loss's kink (delta or beta)."""

    def make(rng, shape, params, form):
        kinks = [0.0]
        if kink_param is not None:
            kinks.append(float(params.get(kink_param, default)))
        t = np.asarray(rng.normal(0.0, 1.0, shape))
        return t + away_from(rng, shape, KINK_GAP, 3.0, kinks), t

    return make


def f_mse(x, t, weight=None):
    w = broadcast(weight, x.shape)
    r = x - t
    return w * r * r, w.sum(), 2.0 * w * r


def f_l1(x, t, weight=None):
    w = broadcast(weight, x.shape)
    r = x - t
    return w * np.abs(r), w.sum(), w * sign_torch(r)


def f_huber(x, t, delta=1.0, weight=None):
    w = broadcast(weight, x.shape)
    r = x - t
    quadratic = np.abs(r) < delta
    per = np.where(quadratic, 0.5 * r * r, delta * (np.abs(r) - 0.5 * delta))
    # PyTorch: the mean of the weighted losses divides by the element count.
    return w * per, float(x.size), w * np.clip(r, -delta, delta)


def f_smooth_l1(x, t, beta=1.0):
    r = x - t
    if beta == 0:  # PyTorch: beta == 0 is l1_loss
        return np.abs(r), float(x.size), sign_torch(r)
    quadratic = np.abs(r) < beta
    per = np.where(quadratic, 0.5 * r * r / beta, np.abs(r) - 0.5 * beta)
    return per, float(x.size), np.clip(r / beta, -1.0, 1.0)


def h_mse(x, t, weight=None):
    return 2.0 * broadcast(weight, x.shape)


def h_l1(x, t, weight=None):
    return np.zeros(x.shape)


def h_huber(x, t, delta=1.0, weight=None):
    return broadcast(weight, x.shape) * (np.abs(x - t) < delta)


def h_smooth_l1(x, t, beta=1.0):
    return (np.abs(x - t) < beta) / beta if beta else np.zeros(x.shape)


def exact_mse(x, y, w, pw, params):
    r = exact_sub(x, y)
    return w * r * r, 2 * w * r, mpmath_module().mpf(0)


def exact_l1(x, y, w, pw, params):
    mp = mpmath_module()
    r = exact_sub(x, y)
    return w * abs(r), w * mp.sign(r), mp.mpf(0)


def exact_huber(x, y, w, pw, params):
    mp = mpmath_module()
    r = exact_sub(x, y)
    a, d = abs(r), params["delta"]
    value = a * a / 2 if a < d else d * (a - d / 2)
    return w * value, w * max(-d, min(r, d)), mp.mpf(0)


def exact_smooth_l1(x, y, w, pw, params):
    mp = mpmath_module()
    b = params["beta"]
    if b == 0:
        return exact_l1(x, y, w, pw, params)
    r = exact_sub(x, y)
    a, zero = abs(r), mp.mpf(0)
    return (a * a / (2 * b), r / b, zero) if a < b else (a - b / 2, mp.sign(r), zero)


def residual_accuracy():
    """Accuracy variants of a residual loss without parameters: plain, and weighted."""
    return (("plain", lambda d: (*residual_pairs(d), {})),
            ("weight", lambda d: with_weight(moderate(*residual_pairs(d), moderate_limit(d)), d)))


def huge_residuals(big, n):
    """Residual losses (and BCE with logits at y = 0): the input itself is the term."""
    return big, np.zeros(n, np.float32), {}


def half_max_residuals(dtype, m):
    a = np.array
    x, t = a([0.75 * m, 1.0, 0.0, -2.0], dtype), a([-0.2 * m, 0.5, 0.0, 0.0], dtype)
    return [(x, t, {}, "r = 0.95 max")]


def half_max_mse(dtype, m):
    a = np.array
    x, t = a([0.75 * m, -0.75 * m, 1.0, 0.0], dtype), a([0.0, 0.0, 0.5, 0.0], dtype)
    return [(x, t, {}, "mean: 2r/n fits"), (x, t, {"weight": a([0.5, 0.25, 1.0, 1.0], dtype)}, "weighted")]


RESIDUAL_SIGNS = dict(non_negative_if=always, gradient_sign="x - y", gradient_support="everywhere")

MSE = LossReference(
    "mse_loss",
    cases=LossCases(residual_inputs(), ELEMENTWISE_SHAPES, ({},) + WEIGHTS),
    formula=f_mse, exact=exact_mse, hessian=h_mse, torch_expand_weight=True, **RESIDUAL_SIGNS,
    accuracy_variants=residual_accuracy(),
    ulp_bounds={F32: (2.0, 1.0), F64: (2.0, 1.0)},
    huge_terms=lambda big, n: (np.sqrt(big.astype(np.float64)).astype(np.float32), np.zeros(n, np.float32), {}),
    half_max_cases=half_max_mse,
    exp_log=False,
)

L1 = LossReference(
    "l1_loss",
    cases=LossCases(residual_inputs(), ELEMENTWISE_SHAPES, ({},) + WEIGHTS),
    formula=f_l1, exact=exact_l1, hessian=h_l1, torch_expand_weight=True, **RESIDUAL_SIGNS,
    accuracy_variants=residual_accuracy(),
    ulp_bounds={F32: (1.0, 0.0), F64: (1.0, 0.0)},  # the gradient w * sign(r) is exact
    # at r = 0: |r| = 0, gradient sign(0) = 0
    kinks=(Kink({}, [2.5, -1.0, 0.0], [2.5, -1.0, 0.0], [0, 0, 0], [0, 0, 0]),),
    huge_terms=huge_residuals, half_max_cases=half_max_residuals,
    exp_log=False,
)

HUBER = LossReference(
    "huber_loss",
    cases=LossCases(
        residual_inputs("delta"), ELEMENTWISE_SHAPES,
        ({}, {"delta": 0.5}, {"delta": 2.5, "weight": "full"}, {"weight": "last"},
         {"weight": "scalar", "delta": 1.5}, {"weight": "column", "delta": 0.3}),
    ),
    formula=f_huber, exact=exact_huber, hessian=h_huber, torch_expand_weight=True, **RESIDUAL_SIGNS,
    accuracy_variants=tuple(
        (f"delta={delta}",
         lambda d, delta=delta: (*finite_residual(*residual_pairs(d, (delta,)), d), {"delta": delta}))
        for delta in (1.0, 0.375, 1e-3)
    ) + (("weight", lambda d: with_weight(moderate(*residual_pairs(d, (1.0,)), moderate_limit(d)), d)),),
    ulp_bounds={F32: (2.0, 0.5), F64: (1.5, 1.0)},
    # at |r| = delta: delta (|r| - delta/2) = delta**2 / 2, gradient clip(r) = +-delta
    kinks=(Kink({"delta": 0.375}, [0.375, -0.375, 1.0], [0.0, 0.0, 1.0], [0.0703125, 0.0703125, 0],
                [0.375, -0.375, 0]),
           Kink({}, [3.0, 1.0], [2.0, 2.0], [0.5, 0.5], [1, -1])),
    huge_terms=huge_residuals, half_max_cases=half_max_residuals,
    exp_log=False,
)

SMOOTH_L1 = LossReference(
    "smooth_l1_loss",
    cases=LossCases(
        residual_inputs("beta"), ELEMENTWISE_SHAPES,
        ({}, {"beta": 0.5}, {"beta": 2.0}, {"beta": 0.0}),
    ),
    formula=f_smooth_l1, exact=exact_smooth_l1, hessian=h_smooth_l1, **RESIDUAL_SIGNS,
    accuracy_variants=tuple(
        (f"beta={beta}", lambda d, beta=beta: (*residual_pairs(d, (beta,) if beta else ()), {"beta": beta}))
        for beta in (1.0, 0.375, 2.0, 0.0)
    ),
    ulp_bounds={F32: (1.5, 1.0), F64: (1.5, 1.0)},
    numpy_ulp_bounds={F64: (1.5, 0.5)},
    # at r = 0 gradient 0; at |r| = beta the linear piece, |r| - beta/2, sign(r)
    kinks=(Kink({"beta": 0.5}, [0.5, -0.5, 3.0], [0.0, 0.0, 3.0], [0.25, 0.25, 0], [1, -1, 0]),
           Kink({"beta": 0.0}, [1.0, -2.0], [1.0, -2.0], [0, 0], [0, 0])),
    huge_terms=huge_residuals, half_max_cases=half_max_residuals,
    exp_log=False,
)



# =========================================================================== pinball_loss
# quantile: a number, or an array broadcast to the input (cases: "last", one per column).


def f_pinball(x, t, quantile=0.5, weight=None):
    w = broadcast(weight, x.shape)
    q = np.broadcast_to(np.asarray(quantile, np.float64), x.shape)
    r = t - x
    per = np.where(r >= 0, q * r, (q - 1.0) * r)
    grad = np.where(r > 0, -q, np.where(r < 0, 1.0 - q, 0.0))
    return w * per, w.sum(), w * grad


def h_pinball(x, t, quantile=0.5, weight=None):
    return np.zeros(x.shape)


def exact_pinball(x, y, w, q, params):
    mp = mpmath_module()
    r = exact_sub(y, x)
    value = q * r if r >= 0 else (q - 1) * r
    grad = -q if r > 0 else ((1 - q) if r < 0 else mp.mpf(0))  # 0 at the kink (and NaN: as l1)
    return w * value, w * grad, mp.mpf(0)


def torch_pinball(x, t, *, reduction="mean", quantile=0.5, weight=None):
    q = quantile if torch.is_tensor(quantile) else torch.tensor(quantile, dtype=x.dtype)
    r = t - x
    per = torch.maximum(q * r, (q - 1) * r)
    if weight is not None:
        per = per * weight
    if reduction == "none":
        return per
    total = per.sum()
    if reduction == "sum":
        return total
    return total / (weight.expand(x.shape).sum() if weight is not None else x.numel())


def pinball_variant(q, weighted=False):
    def build(d):
        x, y = finite_residual(*residual_pairs(d), d)
        kw = {}
        if weighted:
            x, y, kw = with_weight(moderate(x, y, moderate_limit(d)), d)
        return x, y, dict(kw, quantile=np.asarray(q, d))  # the quantile in the compute dtype

    return build


PINBALL = LossReference(
    "pinball_loss",
    cases=LossCases(
        residual_inputs(), ELEMENTWISE_SHAPES,
        ({}, {"quantile": 0.1}, {"quantile": 0.9, "weight": "full"}, {"quantile": "last"},
         {"quantile": "full", "weight": "scalar"}, {"quantile": 0.75, "weight": "column"},
         {"weight": "last", "quantile": "last"}),
    ),
    formula=f_pinball, exact=exact_pinball, hessian=h_pinball, torch_formula=torch_pinball,
    **RESIDUAL_SIGNS,
    accuracy_variants=tuple((f"quantile={q}", pinball_variant(q)) for q in (0.5, 0.1, 0.9, 0.3))
    + (("weight", pinball_variant(0.7, weighted=True)),),
    ulp_bounds={F32: (1.5, 0.5), F64: (1.5, 0.5)},
    # at r = 0: loss 0, gradient 0 (as l1_loss's sign(0))
    kinks=(Kink({"quantile": 0.25}, [1.0, -2.0, 0.0], [1.0, -2.0, 0.0], [0, 0, 0], [0, 0, 0]),),
    huge_terms=lambda big, n: (big, np.zeros(n, np.float32), {"quantile": 0.001}),
    half_max_cases=half_max_residuals,
    exp_log=False,
)

# =========================================================================== binary_cross_entropy


def make_bce(rng, shape, params, form):
    # Probabilities away from 0 and 1: no clamp, and torch's log(1 - x) stays accurate.
    return np.asarray(rng.uniform(0.05, 0.95, shape)), soft_labels(rng, shape)


def f_bce(x, t, weight=None):
    w = broadcast(weight, x.shape)
    log_x = np.maximum(np.log(x), -100.0)
    log_1mx = np.maximum(np.log1p(-x), -100.0)  # log(1 - x), accurate for tiny x
    per = -w * (t * log_x + (1.0 - t) * log_1mx)
    # d/dx of -(t log x + (1-t) log(1-x)) is (x - t) / (x (1 - x)); PyTorch bounds the
    # denominator below by its EPSILON (equal to the derivative away from x = 0, 1).
    grad = w * (x - t) / np.maximum(x * (1.0 - x), BCE_GRAD_EPSILON)
    return per, float(x.size), grad


def h_bce(x, t, weight=None):
    # d/dx of PyTorch's gradient (x - t) / max(x (1 - x), eps): y / x^2 + (1 - y) / (1 - x)^2
    # away from the clamp
    d = np.maximum(x * (1.0 - x), BCE_GRAD_EPSILON)
    return broadcast(weight, x.shape) * ((x - t) ** 2 + t * (1.0 - t)) / d ** 2


def exact_bce(x, y, w, pw, params):
    mp = mpmath_module()
    log_x = max(mp.log(x), mp.mpf(-100)) if x > 0 else mp.mpf(-100)
    log_1mx = max(mp.log1p(-x), mp.mpf(-100)) if x < 1 else mp.mpf(-100)
    value = -w * (y * log_x + (1 - y) * log_1mx)
    return value, w * exact_sub(x, y) / max(x * (1 - x), mp.mpf(BCE_GRAD_EPSILON)), mp.mpf(0)


BCE_X = {
    F32: (0.0, 1.0, 1e-45, 1.2e-38, 1e-30, 1e-12, 1e-8, 1e-3, 0.25, 0.5, 0.75, 0.999,
          1 - 2.0**-24, 1 - 2.0**-23, 0.3, 0.7),
    F64: (0.0, 1.0, 5e-324, 2.3e-308, 1e-200, 1e-44, 1e-30, 1e-12, 1e-8, 0.25, 0.5, 0.999,
          1 - 2.0**-53, 1 - 2.0**-52, 0.3, 0.7),
}
BCE_Y = (0.0, 1.0, 0.5, 0.3, 0.999, 1e-8)

BCE = LossReference(
    "binary_cross_entropy",
    cases=LossCases(
        make_bce, ELEMENTWISE_SHAPES, ({},) + WEIGHTS,
        to_int=lambda x: np.rint(x), to_bool=lambda x: x > 0.5,
    ),
    formula=f_bce, exact=exact_bce, hessian=h_bce, torch_expand_weight=True,
    gradient_support="everywhere", non_negative_if=always, gradient_sign="x - y",
    accuracy_variants=(
        ("plain", lambda d: (*grid(BCE_X[d], BCE_Y, d), {})),
        ("weight", lambda d: with_weight(grid(BCE_X[d], BCE_Y, d), d)),
    ),
    ulp_bounds={F32: (1.5, 1.0), F64: (2.0, 2.0)},
    # at probabilities 0 and 1: each log clamped at -100, gradient (x - y) / max(x (1 - x), EPSILON)
    kinks=(Kink({}, [0.0, 0.0, 1.0, 1.0], [0.0, 1.0, 0.0, 1.0], [0, 100, 100, 0],
                [0, -1 / BCE_GRAD_EPSILON, 1 / BCE_GRAD_EPSILON, 0]),),
    huge_terms=None,  # bounded terms: each log is clamped at -100
    half_max_cases=lambda dtype, m: [
        (np.array([0.5, 1.0, 0.0, 0.25], dtype), np.array([0.5, 1.0, 0.0, 1.0], dtype),
         {"weight": np.array([0.5 * m, 0.5 * m, 0.25 * m, 1.0], dtype)}, "half-max weights")],
    exp_log=True,
)


# =========================================================================== binary_cross_entropy_with_logits


def make_bce_logits(rng, shape, params, form):
    # |x| <= 8: PyTorch's float64 formula (which cancels for tiny losses) stays accurate to
    # 1e-11 there; extreme logits are tested against mpmath in test_edge.
    return np.asarray(rng.uniform(-8.0, 8.0, shape)), soft_labels(rng, shape)


def f_bce_logits(x, t, weight=None, pos_weight=None):
    w = broadcast(weight, x.shape)
    pw = broadcast(pos_weight, x.shape)
    per = times(1.0 - t, softplus(x)) + times(pw * t, softplus(-x))
    grad = (1.0 - t) * expit(x) - pw * t * expit(-x)
    return w * per, float(x.size), w * grad


def h_bce_logits(x, t, weight=None, pos_weight=None):
    pw = broadcast(pos_weight, x.shape)
    return broadcast(weight, x.shape) * ((1.0 - t) + pw * t) * expit(x) * expit(-x)


def exact_bce_logits(x, y, w, pw, params):
    neg, pos = 1 - y, pw * y
    value = w * (exact_times(neg, exact_softplus(x)) + exact_times(pos, exact_softplus(-x)))
    a, b = neg * exact_sigmoid(x), pos * exact_sigmoid(-x)
    return value, w * (a - b), (w * max(a, b) if a and b else mpmath_module().mpf(0))


LOGITS = {
    F32: (0.0, 1e-30, 1e-8, 0.5, 1.0, 2.5, 5.0, 10.0, 17.0, 20.0, 40.0, 80.0, 87.5, 88.5, 100.0,
          1e4, 1e30, 3.4e38),
    F64: (0.0, 1e-300, 1e-8, 0.5, 1.0, 2.5, 5.0, 10.0, 17.0, 37.0, 40.0, 100.0, 700.0, 709.5, 745.0,
          1e4, 1e30, 1e300, 1.79e308),
}
LOGIT_TARGETS = (0.0, 1.0, 0.5, 0.3, 0.875)

BCE_LOGITS = LossReference(
    "binary_cross_entropy_with_logits",
    cases=LossCases(
        make_bce_logits, ELEMENTWISE_SHAPES,
        ({},) + WEIGHTS + (
            {"pos_weight": "last"}, {"pos_weight": "scalar"},
            {"pos_weight": "full", "weight": "scalar"}, {"pos_weight": "last", "weight": "column"},
        ),
    ),
    formula=f_bce_logits, exact=exact_bce_logits, hessian=h_bce_logits, gradient_support="everywhere",
    # any real target is accepted (as PyTorch); the loss is a sum of non-negative terms, and
    # so non-negative, for targets in [0, 1]
    non_negative_if=lambda t: ((t >= 0) & (t <= 1)).all(),
    gradient_sign="hard targets",  # >= 0 at y = 0, <= 0 at y = 1
    soft_labels=True,
    accuracy_variants=(
        ("plain", lambda d: (*grid(signed(LOGITS[d]), LOGIT_TARGETS, d), {})),
        *((f"pos_weight={pw}", lambda d, pw=pw: with_pos_weight(grid(signed(LOGITS[d]), LOGIT_TARGETS, d), d, pw))
          for pw in (3.0, 0.25)),
        ("weight", lambda d: with_weight(grid(signed(LOGITS[d][:14]), LOGIT_TARGETS, d), d)),
    ),
    ulp_bounds={F32: (2.0, 1.5), F64: (2.0, 2.0)},
    # the NumPy backend computes float32 in float64 and rounds once: the same on every level
    numpy_ulp_bounds={F32: (1.5, 1.5)},
    # PyTorch's loss is a difference of two numbers near |x| in the tails; its float32
    # gradient 1 - sigmoid cancels
    torch_loses={
        F32: (farray(F32, -40, -20, -17, 17, 20, 40, -88), farray(F32, 0, 0, 0, 1, 1, 1, 0)),
        F64: (farray(F64, -40, -20, -100, 17, 20, 40, 700), farray(F64, 0, 0, 0, 1, 1, 1, 1)),
    },
    huge_terms=huge_residuals,  # at y = 0
    half_max_cases=lambda dtype, m: [
        (np.array([0.9 * m, -0.9 * m, 2.0, -3.0], dtype), np.array([0.5, 0.25, 1.0, 0.0], dtype), {},
         "huge logits, soft targets")],
    held_to_exact=lambda x, t: True,  # its limits at +-inf included
    exact_limits=True,
    exp_log=True,
)


# =========================================================================== cross_entropy


def make_cross_entropy(rng, shape, params, form):
    x = np.asarray(rng.normal(0.0, 1.5, shape))
    if form == "probabilities":
        return x, class_probabilities(rng, shape)
    return x, class_targets(rng, shape, params, form, -100)


def f_cross_entropy(x, t, weight=None, ignore_index=-100, label_smoothing=0.0):
    z, tt, back, lshape = rows(x, t)
    n_classes = z.shape[1]
    w = np.ones(n_classes) if weight is None else np.asarray(weight, np.float64)
    eps = label_smoothing
    logp = log_softmax_rows(z)
    p = np.exp(logp)
    if tt.ndim == 2:  # class probabilities; "mean" divides by the number of samples
        q = (1.0 - eps) * tt + eps / n_classes
        per = -(w * q * logp).sum(axis=1)
        grad = p * (w * q).sum(axis=1, keepdims=True) - w * q
        return per.reshape(lshape), float(per.size), back(grad)
    kept = tt != ignore_index
    y = np.where(kept, tt, 0)
    idx = np.arange(len(tt))
    wy = np.where(kept, w[y], 0.0)
    nll = -wy * logp[idx, y]
    onehot = np.zeros_like(z)
    onehot[idx, y] = 1.0
    per = nll
    grad = wy[:, None] * (p - onehot)
    if eps > 0:  # the smoothing term exists only for eps > 0 (no 0 * inf at eps = 0)
        smooth = np.where(kept, -(w * logp).sum(axis=1), 0.0)
        per = (1.0 - eps) * nll + eps / n_classes * smooth
        grad = (1.0 - eps) * grad + eps / n_classes * (p * w.sum() - w)
    grad = np.where(kept[:, None], grad, 0.0)
    return per.reshape(lshape), float(wy.sum()), back(grad)


def h_cross_entropy(x, t, weight=None, ignore_index=-100, label_smoothing=0.0):
    # the diagonal k p (1 - p), k the coefficient of p in the gradient
    z, tt, back, lshape = rows(x, t)
    n_classes = z.shape[1]
    w = np.ones(n_classes) if weight is None else np.asarray(weight, np.float64)
    eps = label_smoothing
    p = np.exp(log_softmax_rows(z))
    if tt.ndim == 2:
        k = (w * ((1.0 - eps) * tt + eps / n_classes)).sum(axis=1, keepdims=True)
    else:
        kept = tt != ignore_index
        wy = np.where(kept, w[np.where(kept, tt, 0)], 0.0)
        k = ((1.0 - eps) * wy + np.where(kept, eps / n_classes * w.sum(), 0.0))[:, None]
    return back(k * p * (1.0 - p))


def exact_cross_entropy(z, target, w, params):
    mp = mpmath_module()
    n_classes = len(z)
    zero = mp.mpf(0)
    zeros = [zero] * n_classes
    eps = mp.mpf(params.get("label_smoothing", 0.0))
    nlogp, e = neg_log_softmax(z)
    s = mp.fsum(e)
    p = [v / s for v in e]
    if isinstance(target, list):  # class probabilities
        q = [(1 - eps) * y + eps / n_classes for y in target]
        wq = [wc * qc for wc, qc in zip(w, q)]
        coef = mp.fsum(wq)
        value = mp.fsum(a * b for a, b in zip(wq, nlogp))
        grad = [pc * coef - t for pc, t in zip(p, wq)]
        return value, grad, [max(abs(pc * coef), abs(t)) for pc, t in zip(p, wq)]
    if target == params.get("ignore_index", -100):
        return zero, zeros, zeros
    w_y = w[target]
    # p_y - 1 = -(sum of the other classes' e) / s: no cancellation
    p_minus_hot = [pc if c != target else -mp.fsum(e[d] for d in range(n_classes) if d != target) / s
                   for c, pc in enumerate(p)]
    value = w_y * nlogp[target]
    grad = [w_y * v for v in p_minus_hot]
    if eps == 0:
        return value, grad, zeros
    total_w = mp.fsum(w)
    value = (1 - eps) * value + eps / n_classes * mp.fsum(wc * v for wc, v in zip(w, nlogp))
    grad = [(1 - eps) * g + eps / n_classes * (pc * total_w - wc) for g, pc, wc in zip(grad, p, w)]
    # what fastloss's gradient subtracts: the target part from the softmax part
    terms = [max(abs(((1 - eps) * w_y + eps / n_classes * total_w) * pc),
                 abs((1 - eps) * (w_y if c == target else 0) + eps / n_classes * wc))
             for c, (pc, wc) in enumerate(zip(p, w))]
    return value, grad, terms


def _finite_logit_row(x, t):
    """Rows of finite or -inf logits (at least one finite): exact values are defined."""
    return not (np.isnan(x).any() or (x == np.inf).any() or not np.isfinite(x).any())


CROSS_ENTROPY = LossReference(
    "cross_entropy",
    cases=LossCases(
        make_cross_entropy, CLASS_SHAPES,
        ({}, {"weight": CLASS_WEIGHT}, {"label_smoothing": 0.1},
         {"label_smoothing": 1.0}),
        forms=("indices", "indices+ignored", "probabilities"),
        form_params={
            "indices+ignored": (
                {}, {"ignore_index": -100}, {"weight": CLASS_WEIGHT}, {"ignore_index": 1},
                {"ignore_index": -3, "weight": CLASS_WEIGHT},
                {"label_smoothing": 0.25, "weight": CLASS_WEIGHT, "ignore_index": 2},
                {"label_smoothing": 0.1},
            ),
            "probabilities": (
                {}, {"weight": CLASS_WEIGHT}, {"label_smoothing": 0.2},
                {"label_smoothing": 0.3, "weight": CLASS_WEIGHT},
            ),
        },
        large_shape=(5000, 40),
    ),
    formula=f_cross_entropy, exact=exact_cross_entropy, hessian=h_cross_entropy, gradient_support="kept samples",
    non_negative_if=always,
    gradient_sign="target class",  # class indices: <= 0 at the target class, >= 0 elsewhere
    accuracy_variants=(
        ("plain", lambda d: (*class_inputs(d), {})),
        ("weight", lambda d: (*class_inputs(d), {"weight": class_weight(d)})),
        ("label_smoothing", lambda d: (*summed_class_inputs(d), {"label_smoothing": 0.25})),
        ("label_smoothing+weight",
         lambda d: (*summed_class_inputs(d), {"label_smoothing": 0.125, "weight": class_weight(d)})),
        ("ignore_index", lambda d: ignored(class_inputs(d), 2)),
        ("probabilities", lambda d: with_probability_targets(summed_class_inputs(d)[0], d, {})),
        ("probabilities+weight+smoothing",
         lambda d: with_probability_targets(summed_class_inputs(d)[0], d,
                                            {"weight": class_weight(d), "label_smoothing": 0.25})),
        ("(N,C,d)", lambda d: spatial(class_inputs(d))),
    ),
    # the gradient p_c = exp(x_c - m) / s inherits the rounding of the logit difference
    # x_c - m in the dtype: |x_c - m| * 2**-p relative, i.e. about |x_c - m| / 2 ULP (the
    # conditioning of exp; PyTorch computes the same difference). The random rows have
    # |x_c - m| up to ~16, hence the 7 / 9.5 ULP; the adversarial rows have exact differences.
    ulp_bounds={F32: (3.0, 7.0), F64: (2.5, 9.5)},
    # the NumPy backend's float32 exp and log are NumPy's own SIMD loops, one per level
    numpy_ulp_bounds={F64: (2.5, 8.5),
                      F32: {"avx512": (2.0, 5.0), "avx2": (2.0, 5.0), "baseline": (2.0, 7.0)}},
    # the tiny losses of confident softmax rows: log(s) with s = 1 + tiny
    torch_loses={
        F32: (farray(F32, [0, -40, -40, -40], [20, 0, 0, 0], [0, -10, -12, -9]), np.zeros(3, np.int64)),
        F64: (farray(F64, [0, -40, -40, -40], [20, 0, 0, 0], [40, 0, 0.5, 0]), np.zeros(3, np.int64)),
    },
    huge_terms=lambda big, n: (np.stack([np.zeros(n, np.float32), big], axis=1), np.zeros(n, np.int64), {}),
    half_max_cases=lambda dtype, m: [
        (np.array([[0.9 * m, -0.9 * m, 0.0], [1.0, 2.0, 3.0]], dtype), np.array([0, 2]), {}, "huge logits"),
        (np.array([[0.9 * m, -0.9 * m, 0.0], [1.0, 2.0, 3.0]], dtype), np.array([0, 2]),
         {"label_smoothing": 0.0}, "eps=0 general")],
    # PyTorch's float64 log-softmax rounds the loss of a row like [40, 0, 0.5] to 0 (it is 1.1e-17)
    held_to_exact=_finite_logit_row,
    exp_log=True,
)


# =========================================================================== nll_loss


def make_nll(rng, shape, params, form):
    z = np.asarray(rng.normal(0.0, 1.5, shape))
    ax = 0 if len(shape) == 1 else 1
    m = z.max(axis=ax, keepdims=True)
    logp = z - m - np.log(np.exp(z - m).sum(axis=ax, keepdims=True))
    return logp, class_targets(rng, shape, params, form, -100)


def f_nll(x, t, weight=None, ignore_index=-100):
    z, tt, back, lshape = rows(x, t)
    w = np.ones(z.shape[1]) if weight is None else np.asarray(weight, np.float64)
    kept = tt != ignore_index
    y = np.where(kept, tt, 0)
    idx = np.arange(len(tt))
    wy = np.where(kept, w[y], 0.0)
    per = np.where(kept, -wy * z[idx, y], 0.0)
    grad = np.zeros_like(z)
    grad[idx, y] = -wy
    return per.reshape(lshape), float(wy.sum()), back(grad)


def h_nll(x, t, weight=None, ignore_index=-100):
    return np.zeros(x.shape)  # linear in x


def exact_nll(z, target, w, params):
    zeros = [mpmath_module().mpf(0)] * len(z)
    if target == params.get("ignore_index", -100):
        return zeros[0], zeros, zeros
    grad = list(zeros)
    grad[target] = -w[target]
    return -w[target] * z[target], grad, zeros


NLL = LossReference(
    "nll_loss",
    cases=LossCases(
        make_nll, CLASS_SHAPES,
        ({}, {"weight": CLASS_WEIGHT}),
        forms=("indices", "indices+ignored"),
        form_params={
            "indices+ignored": (
                {}, {"weight": CLASS_WEIGHT}, {"ignore_index": 0, "weight": CLASS_WEIGHT},
                {"ignore_index": 4}, {"ignore_index": -7, "weight": CLASS_WEIGHT},
            ),
        },
        large_shape=(5000, 40),
    ),
    formula=f_nll, exact=exact_nll, hessian=h_nll, gradient_support="kept targets",
    non_negative_if=None,  # the one loss that may be negative: its input is any log-probability
    gradient_sign="target class only",  # <= 0 at the target class, 0 elsewhere
    accuracy_variants=(
        ("plain", lambda d: (*class_inputs(d), {})),
        ("weight", lambda d: (*class_inputs(d), {"weight": class_weight(d)})),
        ("ignore_index", lambda d: ignored(class_inputs(d), 1)),
    ),
    ulp_bounds={F32: (0.5, 0.0), F64: (0.5, 0.0)},
    huge_terms=lambda big, n: (np.stack([-big, np.zeros(n, np.float32)], axis=1), np.zeros(n, np.int64), {}),
    half_max_cases=lambda dtype, m: [
        (np.array([[-0.9 * m, 0.0, 0.0], [0.0, -1.0, -2.0]], dtype), np.array([0, 1]), {},
         "huge log-probability")],
    exp_log=False,
)


# =========================================================================== multi_margin_loss


def make_multi_margin(rng, shape, params, form):
    # Scores with every hinge argument z_c = margin - x_y + x_c (c != y) away from 0.
    margin = float(params.get("margin", 1.0))
    t = class_targets(rng, shape, params, form, None)
    x2 = np.atleast_2d(np.asarray(rng.normal(0.0, 1.0, shape)))
    t1 = np.atleast_1d(t)
    idx = np.arange(x2.shape[0])
    for _ in range(1000):
        z = margin - x2[idx, t1][:, None] + x2
        z[idx, t1] = 1.0  # the target class is not a hinge term
        bad = (np.abs(z) < KINK_GAP).any(axis=1)
        if not bad.any():
            break
        x2[bad] = rng.normal(0.0, 1.0, (int(bad.sum()), x2.shape[1]))
    else:  # pragma: no cover
        raise RuntimeError("could not draw scores away from the kinks")
    return x2.reshape(shape), t


def f_multi_margin(x, t, p=1, margin=1.0, weight=None):
    z, tt, back, lshape = rows(x, t)
    n_classes = z.shape[1]
    w = np.ones(n_classes) if weight is None else np.asarray(weight, np.float64)
    idx = np.arange(len(tt))
    wy = w[tt]
    hinge = margin - z[idx, tt][:, None] + z
    active = hinge > 0  # NaN is not active (PyTorch)
    active[idx, tt] = False
    h = np.where(active, hinge, 0.0)
    per = wy * (h ** p).sum(axis=1) / n_classes
    dh = np.where(active, (1.0 if p == 1 else 2.0 * h) * wy[:, None] / n_classes, 0.0)
    grad = dh.copy()
    grad[idx, tt] = -dh.sum(axis=1)
    return per.reshape(lshape), float(len(tt)), back(grad)


def h_multi_margin(x, t, p=1, margin=1.0, weight=None):
    z, tt, back, lshape = rows(x, t)
    n_classes = z.shape[1]
    w = np.ones(n_classes) if weight is None else np.asarray(weight, np.float64)
    idx = np.arange(len(tt))
    hinge = margin - z[idx, tt][:, None] + z
    active = hinge > 0
    active[idx, tt] = False
    h = np.where(active, (0.0 if p == 1 else 2.0) * w[tt][:, None] / n_classes, 0.0)
    h[idx, tt] = h.sum(axis=1)
    return back(h)


def exact_multi_margin(z, target, w, params):
    mp = mpmath_module()
    n_classes = len(z)
    zero = mp.mpf(0)
    zeros = [zero] * n_classes
    p = int(params.get("p", 1))
    hinge = [exact_sub(v, z[target]) + params.get("margin", 1.0) if c != target else zero
             for c, v in enumerate(z)]
    hinge = [max(h, zero) for h in hinge]
    factor = w[target] / n_classes
    grad = [factor * (p * h ** (p - 1)) if h > 0 else zero for h in hinge]
    grad[target] = -mp.fsum(grad)
    return factor * mp.fsum(h ** p for h in hinge), grad, zeros


def half_max_multi_margin(dtype, m):
    x = np.array([[0.45 * m, -0.45 * m, 0.0], [0.0, 1.0, 2.0]], dtype)
    cases = [(x, np.array([1, 0]), {"p": 2}, "p=2, z = 0.9 max")]
    # p = 1: the row's hinge terms (1.35 max) sum in float64; in float32 that sum fits
    # float64 and the loss (w_y sum / C) is finite. In float64 the sum itself overflows:
    # a known limit (README, "Known limits"), not tested here.
    if dtype == np.float32:
        cases.append((x, np.array([1, 0]), {"p": 1}, "p=1, z = 0.9 max"))
    return cases


MULTI_MARGIN = LossReference(
    "multi_margin_loss",
    cases=LossCases(
        make_multi_margin, ((9, 5), (5,)),
        ({}, {"p": 2}, {"margin": 0.5}, {"p": 2, "margin": 2.0, "weight": CLASS_WEIGHT},
         {"weight": CLASS_WEIGHT}, {"p": 1, "margin": -0.25}),
        forms=("indices",),
        large_shape=(5000, 40),
    ),
    formula=f_multi_margin, exact=exact_multi_margin, hessian=h_multi_margin, gradient_support="everywhere",
    non_negative_if=always, gradient_sign="target class",
    accuracy_variants=tuple(
        (f"p={p},margin={margin}", lambda d, p=p, m=margin: (*margin_rows(d, m), {"p": p, "margin": m}))
        for p, margin in ((1, 1.0), (2, 1.0), (1, 0.5), (2, 2.0))
    ) + (("weight", lambda d: (*margin_rows(d, 1.0), {"weight": class_weight(d)})),),
    ulp_bounds={F32: (1.5, 1.5), F64: (2.0, 1.0)},
    # hinges against huge scores: margin - x_y rounds the margin away
    torch_loses={
        F32: (farray(F32, [1e30, 1e30, -1e30, 0.0], [1e4 + 0.5, 1e4 - 0.5, 1e4, 0]), np.zeros(2, np.int64)),
        F64: (farray(F64, [1e30, 1e30, -1e30, 0.0], [1e17, 1e17, 3.0, 0]), np.zeros(2, np.int64)),
    },
    # z_c = margin - x_y + x_c = 0 exactly for c = 1 does not count (z > 0 only)
    kinks=(Kink({"margin": 1.0}, [[2.0, 1.0, 0.0]], [0], [0.0], [[0.0, 0.0, 0.0]], id="at-kink"),
           Kink({"margin": 1.0, "p": 2}, [[2.0, 1.5, 0.0]], [0], [0.25 / 3], [[-1 / 3, 1 / 3, 0.0]],
                id="beside-kink")),
    # (x_c - x_y + margin) / C with C = 2
    huge_terms=lambda big, n: (np.stack([-big / 2, big / 2], axis=1), np.zeros(n, np.int64), {}),
    half_max_cases=half_max_multi_margin,
    exp_log=False,
)


# =========================================================================== hinge losses
# hinge_loss, squared_hinge_loss: labels +-1, z = margin - y * x away from the kink z = 0.
# PyTorch lacks them: their torch reference is their formula written in torch, so the
# PyTorch conventions (NaN and inf handling) do not apply to them.


def make_hinge(rng, shape, params, form):
    # z = margin - y * x away from the kink z = 0.
    y = signs(rng, shape)
    z = away_from(rng, shape, KINK_GAP, 2.0, [0.0])
    return y * (float(params.get("margin", 1.0)) - z), y


def torch_hinge(square):
    def loss(x, t, *, margin=1.0, weight=None, reduction):
        z = torch.clamp(margin - t * x, min=0)
        per = z * z if square else z
        if weight is not None:
            w = weight.expand(x.shape)
            per = per * w
            divisor = w.sum()
        else:
            divisor = per.numel()
        if reduction == "none":
            return per
        if reduction == "sum":
            return per.sum()
        return per.sum() / divisor

    return loss


def f_hinge(x, t, margin=1.0, weight=None):
    w = broadcast(weight, x.shape)
    z = margin - t * x
    return w * np.maximum(z, 0.0), w.sum(), np.where(z > 0, -w * t, np.where(np.isnan(z), np.nan, 0.0))


def f_squared_hinge(x, t, margin=1.0, weight=None):
    w = broadcast(weight, x.shape)
    h = np.maximum(margin - t * x, 0.0)
    return w * h * h, w.sum(), -2.0 * w * t * h


def h_hinge(x, t, margin=1.0, weight=None):
    return np.zeros(x.shape)


def h_squared_hinge(x, t, margin=1.0, weight=None):
    return 2.0 * broadcast(weight, x.shape) * t * t * (margin - t * x > 0)


def exact_hinge(x, y, w, pw, params):
    zero = mpmath_module().mpf(0)
    z = exact_sub(params["margin"], y * x)
    return w * max(z, zero), (-w * y if z > 0 else zero), zero


def exact_squared_hinge(x, y, w, pw, params):
    zero = mpmath_module().mpf(0)
    h = max(exact_sub(params["margin"], y * x), zero)
    return w * h * h, -2 * w * y * h, zero


HINGE_CASES = LossCases(
    make_hinge, ELEMENTWISE_SHAPES,
    ({}, {"margin": 0.5}, {"margin": 2.0, "weight": "full"}, {"weight": "last"},
     {"weight": "scalar", "margin": -0.5}, {"margin": 0.0, "weight": "column"}),
    to_int=lambda x: np.rint(x), to_bool=lambda x: x > 0,
)
HINGE_ACCURACY = tuple(
    (f"margin={margin}", lambda d, m=margin: (*hinge_pairs(d, m), {"margin": m}))
    for margin in (1.0, 0.5, -0.5, 0.0)
) + (("weight", lambda d: with_weight(moderate(*hinge_pairs(d, 1.0), moderate_limit(d)), d)),)


def half_max_hinges(dtype, m):
    x, t = np.array([-0.9 * m, 1.0, 0.5, -2.0], dtype), np.array([1.0, -1.0, -1.0, 1.0], dtype)
    return [(x, t, {}, "h above half the max"),
            (x, t, {"weight": np.array([0.25, 1.0, 1.0, 1.0], dtype)}, "weighted")]


HINGE_FACTS = dict(
    cases=HINGE_CASES, gradient_support="active terms", non_negative_if=always,
    gradient_sign="-y",  # -y where the hinge is active, 0 elsewhere
    accuracy_variants=HINGE_ACCURACY, half_max_cases=half_max_hinges, exp_log=False,
)

HINGE = LossReference(
    "hinge_loss",
    formula=f_hinge, exact=exact_hinge, hessian=h_hinge, torch_formula=torch_hinge(square=False), **HINGE_FACTS,
    ulp_bounds={F32: (1.5, 0.0), F64: (1.5, 0.0)},
    # at margin - y x = 0: loss 0, gradient 0 (the kink counts as the flat side)
    kinks=(Kink({}, [1.0, -1.0, 0.5], [1.0, -1.0, -1.0], [0, 0, 1.5], [0, 0, 1]),
           Kink({"margin": 0.5}, [0.5, -0.5], [1.0, -1.0], [0, 0], [0, 0])),
    huge_terms=lambda big, n: (-big, np.ones(n, np.float32), {"margin": 0.0}),  # margin - y * x = big
)

SQUARED_HINGE = LossReference(
    "squared_hinge_loss",
    formula=f_squared_hinge, exact=exact_squared_hinge, hessian=h_squared_hinge, torch_formula=torch_hinge(square=True), **HINGE_FACTS,
    ulp_bounds={F32: (2.5, 1.5), F64: (2.0, 1.5)},
    kinks=(Kink({"margin": 2.0}, [2.0, -2.0], [1.0, -1.0], [0, 0], [0, 0]),),
    huge_terms=lambda big, n: (-np.sqrt(big.astype(np.float64)).astype(np.float32), np.ones(n, np.float32),
                               {"margin": 0.0}),
)


# =========================================================================== deviances
# poisson_deviance, gamma_deviance, tweedie_deviance: x the raw prediction on the log link,
# mu = exp(x), targets >= 0 (gamma: > 0); p the Tweedie power (Poisson 1, Gamma 2),
# b = 2 - p, a = 1 - p. PyTorch lacks them: their torch reference is their formula written in
# torch. Near the optimum mu = y the formula's terms (about y^b each) cancel to a tiny d: no
# implementation that carries log y in the working precision keeps d's relative accuracy
# there, so the loss is measured in ULP of max(|d|, 2 w y^b) (``exact_loss_terms``), as a
# gradient that subtracts its terms is.

POWERS = {"poisson_deviance": 1.0, "gamma_deviance": 2.0}


def deviance_power(name, params):
    return POWERS.get(name, float(params.get("power", 1.5)))


def make_deviance(name):
    """Targets e^N(0, 1) (a quarter of them 0 where the power allows it), input log y + u
    with |u| in [0.05, 1.5] (the float64 formulas cancel little there), N(0, 1) at y = 0."""

    def make(rng, shape, params, form):
        y = np.exp(np.asarray(rng.normal(0.0, 1.0, shape)))
        if deviance_power(name, params) < 2.0:
            y = np.where(np.asarray(rng.random(shape)) < 0.25, 0.0, y)
        u = away_from(rng, shape, 0.05, 1.5, [0.0])
        x = np.where(y > 0, np.log(np.where(y > 0, y, 1.0)) + u, np.asarray(rng.normal(0.0, 1.0, shape)))
        return np.asarray(x), np.asarray(y)

    return make


def _phi64(z):
    """e^z - 1 - z in float64: its series below 1e-3 (no cancellation), expm1 above."""
    small = np.abs(z) < 1e-3
    s = np.where(small, z, 0.0)
    return np.where(small, s * s * (0.5 + s * (1 / 6 + s * (1 / 24 + s / 120))), np.expm1(z) - z)


def deviance64(x, t, p):
    """(d, dd/dx, d2d/dx2) per element in float64: d / 2 = y^b (phi(b u) / b + phi(a u) / -a),
    u = x - log y (y > 0); 2 mu^b / b at y = 0 (+inf at p = 2)."""
    b, a = 2.0 - p, 1.0 - p
    pos = t > 0
    ts = np.where(pos, t, 1.0)
    u = x - np.log(ts)
    half = np.zeros(np.shape(x))
    if b:
        half = half + _phi64(b * u) / b
    if a:
        half = half + _phi64(a * u) / -a
    mub, ymua = np.exp(b * x), t * np.exp(a * x)
    at_zero = 2 * mub / b if b else np.full(np.shape(x), np.inf)
    d = np.where(pos, 2 * ts ** b * half, at_zero)
    g = np.where(pos | (b > 0), 2 * (mub - ymua), 2.0)
    h = np.where(pos | (b > 0), 2 * (b * mub - a * ymua), 0.0)
    return d, g, h


def deviance_formula(name):
    def formula(x, t, weight=None, **params):
        w = broadcast(weight, x.shape)
        d, g, _ = deviance64(x, t, deviance_power(name, params))
        return w * d, w.sum(), w * g

    return formula


def deviance_hessian(name):
    def hessian(x, t, weight=None, **params):
        return broadcast(weight, x.shape) * deviance64(x, t, deviance_power(name, params))[2]

    return hessian


def exact_deviance_parts(x, y, p):
    """(d, dd/dx, d2d/dx2, gradient terms, loss terms) exactly (mpmath), the limits at
    infinite x or y: d / 2 = y^b (phi(b u) / b + phi(a u) / -a), phi at full precision."""
    mp = mpmath_module()
    zero, inf, nan = mp.mpf(0), mp.inf, mp.nan
    b, a = 2 - p, 1 - p
    if mp.isnan(x):
        return nan, nan, nan, zero, zero
    if y == 0 and b == 0:  # p = 2: the Gamma deviance's limit at y -> 0
        return inf, mp.mpf(2), zero, zero, zero
    if y == 0:
        mub = mp.exp(b * x) if mp.isfinite(x) else (inf if x > 0 else zero)
        return 2 * mub / b, 2 * mub, 2 * b * mub, zero, zero
    if mp.isinf(y):  # d -> +inf, gradient -> -inf for every finite x (and x = -inf)
        if x == inf:
            return nan, nan, (inf if b == 1 else nan), zero, zero
        hess = (2 * mp.exp(x) if x != -inf else zero) if b == 1 else inf
        return inf, -inf, hess, zero, zero
    if mp.isinf(x):
        if x > 0:  # mu = inf
            return inf, (inf if b > 0 else mp.mpf(2)), (inf if b > 0 else zero), zero, zero
        return (inf, -2 * y, zero, zero, zero) if a == 0 else (inf, -inf, inf, zero, zero)
    u = x - mp.log(y)
    s = y ** b
    half = zero
    if b:
        half += s * exact_phi(b * u) / b
    if a:
        half += s * exact_phi(a * u) / -a
    mub, ymua = mp.exp(b * x), y * mp.exp(a * x)
    return 2 * half, 2 * (mub - ymua), 2 * (b * mub - a * ymua), 2 * max(mub, ymua), 2 * s


def exact_phi(z):
    """e^z - 1 - z at the working precision for every z (its series below 2^-8)."""
    mp = mpmath_module()
    if abs(z) >= mp.mpf(2) ** -8:
        return mp.expm1(z) - z
    term, total, n = z * z / 2, mp.mpf(0), 2
    while term and abs(term) > abs(total) * mp.mpf(2) ** (-mp.mp.prec - 8):
        total += term
        n += 1
        term = term * z / n
    return total


def exact_deviance(name):
    def exact(x, y, w, pw, params):
        d, g, _, g_terms, _ = exact_deviance_parts(x, y, mpmath_module().mpf(deviance_power(name, params)))
        return w * d, w * g, w * g_terms

    return exact


def exact_deviance_hessian(name):
    def exact(x, y, w, pw, params):
        return w * exact_deviance_parts(x, y, mpmath_module().mpf(deviance_power(name, params)))[2], 0

    return exact


def exact_deviance_loss_terms(name):
    """2 |w| y^b, the size of the terms that cancel near the optimum (0 at y = 0 or inf)."""

    def exact(x, y, w, pw, params):
        mp = mpmath_module()
        if not (y > 0 and mp.isfinite(y)):
            return mp.mpf(0)
        return 2 * abs(w) * y ** (2 - mp.mpf(deviance_power(name, params)))

    return exact


def torch_deviance(name):
    def loss(x, t, *, reduction="mean", weight=None, power=1.5):
        p = deviance_power(name, {"power": power})
        if p == 1.0:
            per = 2 * (torch.xlogy(t, t) - t * x - t + torch.exp(x))
        elif p == 2.0:
            per = 2 * (x - torch.log(t) + t * torch.exp(-x) - 1)
        else:
            b, a = 2.0 - p, 1.0 - p
            per = 2 * (t ** b / (a * b) - t * torch.exp(a * x) / a + torch.exp(b * x) / b)
        if weight is not None:
            per = per * weight
        if reduction == "none":
            return per
        total = per.sum()
        if reduction == "sum":
            return total
        return total / (weight.expand(x.shape).sum() if weight is not None else x.numel())

    return loss


def log_link_pairs(dtype, zero=True, seed=8):
    """(x, y): targets from the smallest subnormal to the float maximum (and 0), every one
    against fixed inputs (0, tiny, moderate, the exp overflow and underflow thresholds of the
    dtype, huge, the float maximum, both signs), and inputs around log y (a few ULP, 1e-8,
    ..., 20 away: the optimum, the edges [-1, 2] of the stable form's polynomial), random."""
    info = np.finfo(dtype)
    ys = [float(info.smallest_subnormal), float(info.smallest_subnormal) * 7, float(info.tiny), 1e-30, 1e-10,
          1e-3, 0.3, 1.0, 2.5, 7.0, 1e3, 1e10, 1e30]
    ys += [1e38, float(info.max)] if dtype == F32 else [1e100, 1e300, float(info.max)]
    ys = ([0.0] if zero else []) + ys
    fixed = [0.0, 1e-30, 0.5, 1.0, 3.0, 10.0, 40.0, 87.5, 88.5, 89.0, 103.0, 105.0, 1e4, 1e30, float(info.max)]
    if dtype == F64:
        fixed += [700.0, 709.7, 709.9, 745.0, 750.0]
    fixed += [-v for v in fixed if v]
    xs = [x for x in fixed for _ in ys]
    yy = [y for _ in fixed for y in ys]
    for y in ys:
        if y <= 0:
            continue
        ly = dtype.type(np.log(np.float64(y)))
        for d in (1e-8, 1e-4, 0.01, 0.1, 0.5, 0.99, 1.0, 1.01, 1.5, 1.99, 2.0, 2.01, 2.5, 5.0, 20.0):
            for s in (1, -1):
                xs.append(float(ly) + s * d)
                yy.append(y)
        v_lo = v_hi = ly
        xs.append(float(ly))
        yy.append(y)
        for _ in range(3):  # a few ULP either side of log y
            v_lo, v_hi = np.nextafter(v_lo, dtype.type(-np.inf)), np.nextafter(v_hi, dtype.type(np.inf))
            xs += [float(v_lo), float(v_hi)]
            yy += [y, y]
    rng = np.random.default_rng(seed)
    t = np.exp(rng.normal(0.0, 3.0, 48))
    xs += list(np.log(t) + rng.normal(0.0, 2.0, 48))
    yy += list(t)
    with np.errstate(over="ignore"):
        return np.array(xs, np.float64).astype(dtype), np.array(yy, np.float64).astype(dtype)


def deviance_accuracy(name, powers=(None,)):
    """Accuracy variants: one per power (the registry default for poisson and gamma), and
    weighted (moderate inputs: w d must not overflow only in d)."""
    zero = name != "gamma_deviance"
    out = []
    for p in powers:
        kw = {} if p is None else {"power": p}
        vid = "plain" if p is None else f"power={p}"
        out.append((vid, lambda d, kw=kw, z=zero and kw.get("power") != 2.0: (*log_link_pairs(d, z), dict(kw))))
    out.append(("weight", lambda d, z=zero: with_weight(moderate_deviance(*log_link_pairs(d, z), name, d), d)))
    return tuple(out)


def moderate_deviance(x, y, name, dtype):
    """The pairs whose deviance (at the default power) and target lie in the normal range of
    the dtype, the deviance below a quarter of its maximum: w d with w < 2 must not overflow
    only in d (a known limit, as w r**2), nor round twice below the normal range (the plain
    variants hold the subnormal results)."""
    info = np.finfo(dtype)
    with np.errstate(all="ignore"):
        d = deviance64(x.astype(np.float64), y.astype(np.float64), deviance_power(name, {}))[0]
        g = 2 * np.abs(np.exp(x.astype(np.float64)) - y)
    normal = lambda v: (v == 0) | (v >= 4 * float(info.tiny))  # noqa: E731
    keep = (d < 0.25 * float(info.max)) & normal(d) & normal(y.astype(np.float64)) & normal(g)
    return x[keep], y[keep]


def deviance_half_max(name):
    """Terms above half the float max whose sums fit: 2 mu at y = 0 (Poisson), 2 y / mu
    (Gamma), 2 mu^b / b at y = 0 (Tweedie)."""

    def cases(dtype, m):
        p = deviance_power(name, {})
        big = np.log(0.15 * m) if p == 1.0 else (-np.log(0.3 * m) if p == 2.0 else 2 * np.log(0.15 * m))
        y0 = 1.0 if p == 2.0 else 0.0
        x = np.array([big, 1.0, 0.0, -2.0], dtype)
        t = np.array([y0, 0.5, 2.0, 1.0], dtype)
        return [(x, t, {}, "a term above half the max"),
                (x, t, {"weight": np.array([0.5, 1.0, 1.0, 1.0], dtype)}, "weighted")]

    return cases


def deviance_huge_terms(name):
    """float32 terms of about 2e38 to 3e38 (computed in float64 inside: mu itself may overflow)."""

    def huge(big, n):
        p = deviance_power(name, {})
        b64 = big.astype(np.float64)
        if p == 2.0:  # d ~ 2 y / mu at y = 1
            return (-np.log(b64 / 2)).astype(np.float32), np.ones(n, np.float32), {}
        b = 2.0 - p
        x = np.log(b64 * b / 2) / b  # 2 mu^b / b at y = 0
        return x.astype(np.float32), np.zeros(n, np.float32), {}

    return huge


DEVIANCE_FACTS = dict(
    gradient_support="everywhere", non_negative_if=always, gradient_sign="x - log y", exp_log=True,
    held_to_exact=lambda x, t: True, exact_limits=True,
)

POISSON_DEVIANCE = LossReference(
    "poisson_deviance",
    cases=LossCases(make_deviance("poisson_deviance"), ELEMENTWISE_SHAPES, ({},) + WEIGHTS),
    formula=deviance_formula("poisson_deviance"), exact=exact_deviance("poisson_deviance"),
    hessian=deviance_hessian("poisson_deviance"), torch_formula=torch_deviance("poisson_deviance"),
    exact_loss_terms=exact_deviance_loss_terms("poisson_deviance"),
    accuracy_variants=deviance_accuracy("poisson_deviance"),
    ulp_bounds={F32: (1.5, 1.5), F64: (2.0, 1.5)},
    huge_terms=deviance_huge_terms("poisson_deviance"), half_max_cases=deviance_half_max("poisson_deviance"),
    **DEVIANCE_FACTS,
)

GAMMA_DEVIANCE = LossReference(
    "gamma_deviance",
    cases=LossCases(make_deviance("gamma_deviance"), ELEMENTWISE_SHAPES, ({},) + WEIGHTS),
    formula=deviance_formula("gamma_deviance"), exact=exact_deviance("gamma_deviance"),
    hessian=deviance_hessian("gamma_deviance"), torch_formula=torch_deviance("gamma_deviance"),
    exact_loss_terms=exact_deviance_loss_terms("gamma_deviance"),
    accuracy_variants=deviance_accuracy("gamma_deviance"),
    ulp_bounds={F32: (1.5, 1.5), F64: (2.0, 2.0)},
    numpy_ulp_bounds={F64: (2.0, 1.5)},
    huge_terms=deviance_huge_terms("gamma_deviance"), half_max_cases=deviance_half_max("gamma_deviance"),
    **DEVIANCE_FACTS,
)

TWEEDIE_DEVIANCE = LossReference(
    "tweedie_deviance",
    cases=LossCases(
        make_deviance("tweedie_deviance"), ELEMENTWISE_SHAPES,
        ({}, {"power": 1.0}, {"power": 2.0, "weight": "full"}, {"power": 1.25, "weight": "last"},
         {"weight": "scalar", "power": 1.75}, {"weight": "column", "power": 1.5}),
    ),
    formula=deviance_formula("tweedie_deviance"), exact=exact_deviance("tweedie_deviance"),
    hessian=deviance_hessian("tweedie_deviance"), torch_formula=torch_deviance("tweedie_deviance"),
    exact_loss_terms=exact_deviance_loss_terms("tweedie_deviance"),
    accuracy_variants=deviance_accuracy(
        "tweedie_deviance", (1.5, 1.25, 1.75, 1.0, 2.0, 1.0078125, 1.9921875, 1 + 2.0**-20, 2 - 2.0**-20)),
    ulp_bounds={F32: (1.5, 1.5), F64: (3.5, 2.0)},
    huge_terms=deviance_huge_terms("tweedie_deviance"), half_max_cases=deviance_half_max("tweedie_deviance"),
    **DEVIANCE_FACTS,
)


# =========================================================================== log_cosh_loss
# PyTorch lacks it: its torch reference is its formula written in torch (stable, so the
# reference is accurate at every residual), and the PyTorch conventions do not apply to it.


def _log_cosh64(r):
    """log(cosh(r)) in float64 for every r: log1p(s**2 / (2 (1 + s))), s = expm1(-|r|), below 1
    (cosh r - 1 = (1 - e^-|r|)**2 / (2 e^-|r|), no cancellation), |r| - log 2 +
    log1p(exp(-2|r|)) above (no overflow)."""
    a = np.abs(r)
    s = np.expm1(-np.minimum(a, 1.0))
    return np.where(a < 1, np.log1p(s * s / (2 * (1 + s))), a - np.log(2.0) + np.log1p(np.exp(-2 * a)))


def f_log_cosh(x, t, weight=None):
    w = broadcast(weight, x.shape)
    r = x - t
    return w * _log_cosh64(r), w.sum(), w * np.tanh(r)


def h_log_cosh(x, t, weight=None):
    return broadcast(weight, x.shape) / np.cosh(x - t) ** 2  # sech**2 (cosh overflows: 0)


def _exact_log_cosh_parts(x, y):
    """(log cosh r, tanh r, sech(r)**2) of the exact residual r = x - y (mpmath; huge |r|
    without cosh's huge intermediate)."""
    mp = mpmath_module()
    r = exact_sub(x, y)
    a = abs(r)
    if mp.isinf(a):
        return a, mp.sign(r), mp.mpf(0)
    u = mp.exp(-2 * a)
    value = mp.log1p(2 * mp.sinh(a / 2) ** 2) if a < 1 else a - mp.log(2) + mp.log1p(u)
    return value, mp.tanh(r), 4 * u / (1 + u) ** 2


def exact_log_cosh(x, y, w, pw, params):
    value, th, _ = _exact_log_cosh_parts(x, y)
    return w * value, w * th, mpmath_module().mpf(0)


def exact_hessian_log_cosh(x, y, w, pw, params):
    """(the exact second derivative of the weighted term, terms): sech(r)**2 subtracts nothing."""
    return w * _exact_log_cosh_parts(x, y)[2], mpmath_module().mpf(0)


def torch_log_cosh(x, t, *, weight=None, reduction):
    # log(cosh(r)) in torch ops, stable at every residual as the float64 formula above (both
    # branches on clamped arguments: no inf * 0 in the backward of the branch not taken)
    r = x - t
    a = r.abs()
    s = torch.expm1(-a.clamp(max=1.0))
    small = torch.log1p(s * s / (2 * (1 + s)))
    large = a + torch.nn.functional.softplus(-2 * a) - np.log(2.0)
    per = torch.where(a < 1, small, large)
    divisor = per.numel()
    if weight is not None:
        w = weight.expand(x.shape)
        per = per * w
        divisor = w.sum()
    if reduction == "none":
        return per
    if reduction == "sum":
        return per.sum()
    return per.sum() / divisor


def log_cosh_residuals(dtype):
    """(x, y = 0): residuals at the implementation's switches (0.55, 0.8, each +-1 ULP), where
    sech**2 underflows (52, 89, 373, 710), cosh's own overflow, tiny and huge, random."""
    points = [0.55, 0.8, 1e-3, 0.1, 0.3466, 1.0, 1.5, 3.0, 10.0, 20.0, 40.0, 52.0, 89.0, 100.0, 373.0,
              710.0, 1e4, 1e30, 1e-30, float(np.finfo(dtype).smallest_subnormal), float(np.finfo(dtype).max)]
    xs = []
    for v in points:
        v = dtype.type(v)
        xs += [v, np.nextafter(v, dtype.type(0))] + ([np.nextafter(v, dtype.type(np.inf))] if v < np.finfo(dtype).max else [])
    xs += list(np.random.default_rng(7).normal(0, 2, 48))
    x = np.array(signed(xs), np.float64).astype(dtype)
    return x, np.zeros_like(x)


LOG_COSH = LossReference(
    "log_cosh_loss",
    cases=LossCases(residual_inputs(), ELEMENTWISE_SHAPES, ({},) + WEIGHTS),
    formula=f_log_cosh, exact=exact_log_cosh, hessian=h_log_cosh, torch_formula=torch_log_cosh,
    **RESIDUAL_SIGNS,
    accuracy_variants=(("residuals", lambda d: (*log_cosh_residuals(d), {})),) + residual_accuracy(),
    ulp_bounds={F32: (2.0, 1.0), F64: (1.5, 1.0)},
    # float32 in float64 (rounded once); float64 below |r| = 1 through expm1 and log1p (no series)
    numpy_ulp_bounds={F32: (1.0, 1.0), F64: (3.0, 1.5)},
    huge_terms=huge_residuals,  # log cosh r = |r| - log 2 there
    half_max_cases=half_max_residuals,
    exp_log=True,
)


# =========================================================================== pseudo_huber_loss
# delta**2 (sqrt(1 + (r / delta)**2) - 1): no kink (smooth everywhere), no PyTorch loss. Its
# float64 and torch formulas take the algebraically equal r**2 / (sqrt(1 + (r / delta)**2) + 1)
# in terms of m = min(|r|, delta) / max(|r|, delta) <= 1, so they are accurate at every
# residual (huge ones, tiny delta) and give the limits at r = +-inf (loss inf, gradient
# +-delta, Hessian 0).


def _pseudo_huber64(r, delta):
    """(loss, gradient, Hessian) of the residual r, float64, at every r: with a = |r|,
    m = min(a, delta) / max(a, delta) and k = sqrt(1 + m**2), sqrt(1 + (r / delta)**2) is k
    (a <= delta) or k / m, so loss = a * min(a, delta) / (k + (1 or m)), |gradient| =
    min(a, delta) / k, Hessian (1 or m**3) / k**3."""
    a = np.abs(r)
    inside = a <= delta
    lo, hi = np.minimum(a, delta), np.maximum(a, delta)
    m = lo / hi
    k = np.sqrt(1 + m * m)
    loss = a * lo / (k + np.where(inside, 1.0, m))
    grad = np.where(np.isnan(r), r, np.sign(r) * lo / k)
    return loss, grad, np.where(inside, 1.0, m ** 3) / k ** 3


def f_pseudo_huber(x, t, delta=1.0, weight=None):
    w = broadcast(weight, x.shape)
    per, grad, _ = _pseudo_huber64(x - t, delta)
    # huber_loss's conventions: the mean of the weighted losses divides by the element count
    return w * per, float(x.size), w * grad


def h_pseudo_huber(x, t, delta=1.0, weight=None):
    return broadcast(weight, x.shape) * _pseudo_huber64(x - t, delta)[2]


def exact_pseudo_huber(x, y, w, pw, params):
    mp = mpmath_module()
    r = exact_sub(x, y)
    d = mp.mpf(params.get("delta", 1.0))
    if mp.isinf(r):
        return w * abs(r), w * d * mp.sign(r), mp.mpf(0)
    s = mp.sqrt(1 + (r / d) ** 2)
    # delta**2 (s - 1) = r**2 / (s + 1) (no cancellation at EXACT_PREC either way)
    return w * (r * r / (s + 1)), w * (r / s), mp.mpf(0)


class _TorchPseudoHuber(torch.autograd.Function if torch is not None else object):
    """The per-element loss with its gradient as the backward (torch ops): autograd through
    the formula would give inf * 0 at r = +-inf, where the gradient's limit is +-delta."""

    @staticmethod
    def forward(ctx, r, delta):
        a = r.abs()
        lo, hi = torch.clamp(a, max=delta), torch.clamp(a, min=delta)
        lo, hi = torch.where(a.isnan(), a, lo), torch.where(a.isnan(), a, hi)
        m = lo / hi
        k = torch.sqrt(1 + m * m)
        ctx.save_for_backward(torch.sign(r) * lo / k)
        return a * lo / (k + torch.where(a <= delta, torch.ones_like(m), m))

    @staticmethod
    def backward(ctx, grad_out):
        (g,) = ctx.saved_tensors
        return grad_out * g, None


def torch_pseudo_huber(x, t, *, delta=1.0, weight=None, reduction):
    per = _TorchPseudoHuber.apply(x - t, delta)
    if weight is not None:
        per = per * weight.expand(x.shape)
    if reduction == "none":
        return per
    if reduction == "sum":
        return per.sum()
    return per.sum() / per.numel()  # huber_loss's 'mean': the element count, weighted or not


def pseudo_huber_residuals(dtype, delta):
    """(x, y = 0): residuals at delta (where the implementation switches from m = |r| / delta
    to m = delta / |r|) and one ULP around, tiny (r**2 underflows; subnormal), huge (r**2
    and (r / delta)**2 overflow), the float max, random."""
    points = [delta, 1e-3, 0.1, 0.5, 1.0, 2.0, 10.0, 1e4, 1e10, 1e19, 1e20, 1e30, 1e-10, 1e-20, 1e-30,
              float(np.finfo(dtype).tiny), float(np.finfo(dtype).smallest_subnormal), float(np.finfo(dtype).max)]
    if dtype == F64:
        points += [1e150, 1e155, 1e300, 1e-150, 1e-160, 1e-300]
    xs = []
    for v in points:
        v = dtype.type(v)
        if not (np.isfinite(v) and v > 0):
            continue
        xs += [v, np.nextafter(v, dtype.type(0))] + ([np.nextafter(v, dtype.type(np.inf))] if v < np.finfo(dtype).max else [])
    xs += list(np.random.default_rng(9).normal(0, 3 * delta, 48))
    x = np.array(signed(xs), np.float64).astype(dtype)
    return x, np.zeros_like(x)


def half_max_pseudo_huber(dtype, m):
    a = np.array
    x, t = a([0.75 * m, 1.0, 0.0, -2.0], dtype), a([-0.2 * m, 0.5, 0.0, 0.0], dtype)
    return [(x, t, {}, "r = 0.95 max"), (x, t, {"delta": 0.5}, "r = 0.95 max, delta = 0.5"),
            (x, t, {"delta": 2.0 ** -100}, "r = 0.95 max, tiny delta")]


# delta exact in float32 (the float32 kernels round delta, which the exact terms do not)
PSEUDO_HUBER_DELTAS = (1.0, 0.375, 2.5, 2.0 ** -10, 2.0 ** -100, 2.0 ** 100)

PSEUDO_HUBER = LossReference(
    "pseudo_huber_loss",
    cases=LossCases(
        residual_inputs(), ELEMENTWISE_SHAPES,
        ({}, {"delta": 0.5}, {"delta": 2.5, "weight": "full"}, {"weight": "last"},
         {"weight": "scalar", "delta": 1.5}, {"weight": "column", "delta": 0.3}),
    ),
    formula=f_pseudo_huber, exact=exact_pseudo_huber, hessian=h_pseudo_huber,
    torch_formula=torch_pseudo_huber, **RESIDUAL_SIGNS,
    accuracy_variants=tuple(
        (f"residuals delta={delta}", lambda d, delta=delta: (*pseudo_huber_residuals(d, delta), {"delta": delta}))
        for delta in PSEUDO_HUBER_DELTAS
    ) + tuple(
        (f"pairs delta={delta}",
         lambda d, delta=delta: (*finite_residual(*residual_pairs(d, (delta,)), d), {"delta": delta}))
        for delta in PSEUDO_HUBER_DELTAS[:4]
    ) + (("weight", lambda d: with_weight(moderate(*residual_pairs(d, (1.0,)), moderate_limit(d)), d)),),
    # measured 2.34 / 1.68 (float32), 2.25 / 1.62 (float64), the same bits at every SIMD level
    # (plain IEEE operations): the roundings of m, sqrt, the sum, the quotient and the product
    ulp_bounds={F32: (2.5, 2.0), F64: (2.5, 2.0)},
    # float32 in float64, rounded once (1.01 / 0.77: the weighted loss rounds twice); float64
    # the compiled functor's operations (its bounds)
    numpy_ulp_bounds={F32: (1.5, 1.0)},
    huge_terms=huge_residuals,  # delta = 1: the loss is |r| - 1 there
    half_max_cases=half_max_pseudo_huber,
    exp_log=False,
)


# =========================================================================== poisson_nll_loss, kl_div
# PyTorch's losses of a log and an exp. Their formulas subtract terms that cancel (exp(x) - y x,
# x - y log(x + eps), y log y - y x): the cases keep every loss term at least CANCEL_GAP of the
# terms it subtracts (no element whose float32 value PyTorch's float64 could not be compared
# with at rtol 1e-5), and the accuracy variants measure the loss in ULP of the larger term
# where they cancel (loss_terms). The targets are counts (Poisson) and probabilities or
# log-probabilities (KL): PyTorch checks neither, nor does fastloss.

CANCEL_GAP = 0.1


def _away_from_cancellation(rng, draw, x, per_and_terms):
    """Redraw the inputs whose loss term is below CANCEL_GAP of the terms it subtracts."""
    for _ in range(1000):
        with np.errstate(all="ignore"):
            per, terms = per_and_terms(x)
        bad = np.asarray(np.abs(per) < CANCEL_GAP * terms)
        if not bad.any():
            return x
        x = np.where(bad, draw(rng, np.shape(x)), x)
    raise RuntimeError("could not draw inputs away from the cancellations")  # pragma: no cover


def _poisson_kwargs(params):
    return bool(params.get("log_input", True)), bool(params.get("full", False)), float(params.get("eps", 1e-8))


def stirling(t):
    """y log y - y + log(2 pi y) / 2 where y > 1, 0 where y <= 1 (NaN for NaN y: PyTorch's
    masked_fill(target <= 1, 0))."""
    with np.errstate(all="ignore"):
        return np.where(t <= 1, 0.0, t * np.log(t) - t + 0.5 * np.log(2 * np.pi * t))


def f_poisson_nll(x, t, log_input=True, full=False, eps=1e-8):
    with np.errstate(all="ignore"):
        if log_input:
            e = np.exp(x)
            per, grad = e - t * x, e - t
        else:
            per, grad = x - t * np.log(x + eps), 1.0 - t / (x + eps)
    if full:
        per = per + stirling(t)
    return per, float(x.size), grad


def h_poisson_nll(x, t, log_input=True, full=False, eps=1e-8):
    return np.exp(x) if log_input else t / (x + eps) ** 2


def _poisson_terms(x, t, log_input, full, eps):
    """float64 (loss, magnitude of the terms it subtracts) per element, for the cases."""
    per = f_poisson_nll(x, t, log_input, full, eps)[0]
    terms = np.exp(x) + np.abs(t * x) if log_input else np.abs(x) + np.abs(t * np.log(x + eps))
    if full:
        terms = terms + np.where(t > 1, np.abs(t * np.log(np.maximum(t, 1))) + t + 1.0, 0.0)
    return per, terms


def make_poisson_nll(rng, shape, params, form):
    # Counts from a Poisson of a random rate, and a few non-integer targets; log-rates in
    # [-1.5, 2.5] (log_input) or rates in [0.1, 6] (finite differences stay on the positive
    # side). The cases without parameters draw log-rates from [0.1, 2.5]: positive, they are
    # valid rates too (the C-level tests run them with every value of log_input).
    log_input, full, eps = _poisson_kwargs(params)
    rate = np.asarray(rng.uniform(0.2, 6.0, shape))
    t = np.where(np.asarray(rng.random(shape)) < 0.8, np.asarray(rng.poisson(rate)), np.asarray(rng.uniform(0.0, 5.0, shape)))
    t = np.asarray(t, np.float64)
    low = 0.1 if not params or not log_input else -1.5
    draw = (lambda r, s: np.asarray(r.uniform(low, 2.5, s))) if log_input else (
        lambda r, s: np.asarray(r.uniform(0.1, 6.0, s)))
    x = _away_from_cancellation(rng, draw, draw(rng, shape),
                                lambda xv: _poisson_terms(xv, t, log_input, full, eps))
    return x, t


def _exact_poisson_parts(x, y, params):
    """(loss, gradient, the gradient's subtracted-term magnitude, the loss's), exact."""
    mp = mpmath_module()
    if params["log_input"]:
        e = mp.exp(x)
        value, grad = e - y * x, e - y
        loss_terms, grad_terms = max(abs(e), abs(y * x)), max(abs(e), abs(y))
    else:
        s = mp.fadd(x, params["eps"], exact=True)
        log_s = mp.log(s) if s > 0 else (-mp.inf if s == 0 else mp.nan)
        ratio = y / s if s != 0 else (mp.inf * mp.sign(y) if y != 0 else mp.nan)  # y / (x + eps)
        value, grad = x - y * log_s, 1 - ratio
        loss_terms, grad_terms = max(abs(x), abs(y * log_s)), max(mp.mpf(1), abs(ratio))
    if params["full"] and y > 1:
        ly = mp.log(y)
        parts = (y * ly, y, (mp.log(2 * mp.pi) + ly) / 2)
        value += parts[0] - parts[1] + parts[2]
        loss_terms = max([loss_terms] + [abs(v) for v in parts])
    return value, grad, grad_terms, loss_terms


def exact_poisson_nll(x, y, w, pw, params):
    value, grad, grad_terms, _ = _exact_poisson_parts(x, y, params)
    return w * value, w * grad, w * grad_terms


def poisson_loss_terms(x, y, w, pw, params):
    return w * _exact_poisson_parts(x, y, params)[3]


def poisson_gradient_sign(x, t, kw, grad):
    """The gradient has the sign of the predicted rate minus the count: exp(x) - y
    (log_input), x + eps - y (else, for a positive rate); where the two are within 1e-4 of
    each other the rounding of either may decide (no documented sign)."""
    log_input, _, eps = _poisson_kwargs(kw)
    with np.errstate(all="ignore"):
        rate = np.exp(x) if log_input else x + eps
        decided = (rate > 0) & (np.abs(rate - t) > 1e-4 * np.maximum(np.abs(rate), np.abs(t)))
        return decided & (grad * np.sign(rate - t) < 0)


# log-rates (log_input=True), rates (log_input=False) and counts of the accuracy variants:
# exp(x) from subnormal to overflow, rates around 1 (x + eps rounds: log(x + eps) near 0 with
# counts up to 1e8), tiny rates against eps, huge rates; counts 0 to 1e30, e (the minimum
# exp(x) - y x = y (1 - log y) is 0 there), around the Stirling term's zero (y ~ 1.15).
POISSON_LOG_RATES = {
    F32: signed((0.0, 1e-30, 1e-8, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 87.5, 88.5, 89.0, 100.0))
    + (-103.0, -104.5, -110.0),
    F64: signed((0.0, 1e-300, 1e-8, 0.5, 1.0, 2.5, 10.0, 40.0, 100.0, 700.0, 709.5, 710.0)) + (-740.0, -745.0, -750.0),
}
POISSON_RATES = {
    F32: (0.0, 1e-30, 1e-10, 1e-8, 3e-8, 1e-6, 1e-3, 0.1, 0.5, 1 - 2.0**-24, 1.0, 1 + 2.0**-23, 1 + 2.0**-20, 2.0,
          10.0, 1e4, 1e30, 3e38),
    F64: (0.0, 1e-300, 1e-10, 1e-8, 3e-8, 1e-6, 1e-3, 0.1, 0.5, 1 - 2.0**-53, 1.0, 1 + 2.0**-52, 1 + 2.0**-40, 2.0,
          10.0, 1e4, 1e30, 1e300),
}
POISSON_COUNTS = (0.0, 1.0, 2.0, 3.0, 7.0, 10.0, 100.0, 1e4, 1e6, 1e8, 0.5, 1e-3, 2.718281828459045, 1.1, 1.15,
                  1.2, 1e30)
EPS32 = float(np.float32(1e-8))  # PyTorch's default eps, as the nearest float32 (exact in both dtypes)


def poisson_variant(log_input, full, eps=None):
    def build(d):
        if log_input:
            x, t = grid(POISSON_LOG_RATES[d], POISSON_COUNTS, d)
        else:
            x, t = grid(POISSON_RATES[d], POISSON_COUNTS, d)
            # x + eps = 0 with a zero count: 0 * log(0) is NaN (PyTorch), not a value; and a
            # known limit: a gradient y / (x + eps) beyond the float maximum is inf even where
            # the mean's (that over the count) would fit (the sum's overflows first)
            with np.errstate(all="ignore"):
                ratio = t.astype(np.float64) / (x.astype(np.float64) + eps)
            keep = ((x > 0) | (t > 0)) & (ratio < float(np.finfo(d).max) / 2)
            x, t = x[keep], t[keep]
        kw = {"log_input": log_input, "full": full} | ({} if eps is None else {"eps": eps})
        return x, t, kw
    return build


POISSON_NLL = LossReference(
    "poisson_nll_loss",
    cases=LossCases(
        make_poisson_nll, ELEMENTWISE_SHAPES,
        ({}, {"full": True}, {"log_input": False}, {"log_input": False, "eps": 0.5},
         {"log_input": False, "full": True}, {"log_input": True, "full": True, "eps": 0.0}),
        to_int=lambda x: np.maximum(np.rint(x), 0), to_bool=lambda x: x > 1,
    ),
    formula=f_poisson_nll, exact=exact_poisson_nll, exact_loss_terms=poisson_loss_terms, hessian=h_poisson_nll,
    gradient_support="everywhere",
    non_negative_if=None,  # exp(x) - y x is negative around x = log y for y > e
    gradient_sign=poisson_gradient_sign,
    accuracy_variants=(
        ("log_input=True", poisson_variant(True, False)),
        ("log_input=True,full=True", poisson_variant(True, True)),
        ("log_input=False,eps=1e-8 (float32)", poisson_variant(False, False, EPS32)),
        ("log_input=False,eps=0", poisson_variant(False, False, 0.0)),
        ("log_input=False,full=True,eps=0.5", poisson_variant(False, True, 0.5)),
    ),
    # measured: the loss in ULP of its larger term where exp(x) and y x (x and y log(x + eps))
    # cancel; the baseline level multiplies and adds where the others fuse (vm::mad)
    ulp_bounds={F32: {"avx512": (1.5, 1.5), "avx2": (1.5, 1.5), "baseline": (2.0, 1.5)},
                F64: {"avx512": (1.5, 1.5), "avx2": (1.5, 1.5), "baseline": (2.0, 1.5)}},
    # float32 in float64, rounded once; float64 with NumPy's exp and log
    numpy_ulp_bounds={F32: (1.0, 0.5), F64: (2.0, 1.0)},  # measured 0.92 (gradient) on all three levels
    # log_input=False, the rate x itself is the term: y = 0
    huge_terms=lambda big, n: (big, np.zeros(n, np.float32), {"log_input": False}),
    half_max_cases=lambda dtype, m: [
        (np.array([-0.9 * m, 1.0, 0.0, -2.0], dtype), np.array([0.5, 2.0, 0.0, 3.0], dtype), {},
         "log-rate -0.9 max: y x"),
        (np.array([0.9 * m, 1.0, 2.0, 0.5], dtype), np.array([1.0, 1.0, 0.0, 3.0], dtype), {"log_input": False},
         "rate 0.9 max"),
        (np.array([0.9 * m, 1.0, 2.0, 0.5], dtype), np.array([1e4, 1.0, 0.0, 3.0], dtype),
         {"log_input": False, "full": True}, "rate 0.9 max, full")],
    exp_log=True,
    # where the count is within a factor 2 of the rate (log_input=False) 1 - y / (x + eps)
    # cancels: PyTorch's float64 1 - q keeps q's rounding (a relative error up to 1e-8 at
    # x = y = 1), fastloss computes (x + eps - y) / (x + eps): held to the exact value there
    held_to_exact=lambda x, t: bool(np.isfinite(x) and np.isfinite(t) and x + 1e-8 != 0
                                    and 0.5 <= t / (x + 1e-8) <= 2),
)


# =========================================================================== sigmoid_focal_loss
# torchvision.ops.sigmoid_focal_loss (torchvision is not a dependency: its formula is written
# in torch below, as torchvision 0.2x writes it).


def f_sigmoid_focal(x, t, alpha=0.25, gamma=2.0):
    """torchvision's loss in float64, with its gradient and Hessian written from the
    textbook derivatives (powers of m = 1 - p_t; valid where m > 0)."""
    p, q = expit(x), expit(-x)
    ce = times(1.0 - t, softplus(x)) + times(t, softplus(-x))
    m = t * q + (1.0 - t) * p  # 1 - p_t, without its cancellation
    at = alpha * t + (1 - alpha) * (1 - t) if alpha >= 0 else np.ones_like(x)
    dm = (1 - 2 * t) * p * q
    grad = m ** gamma * (p - t) + (gamma * m ** (gamma - 1) * dm * ce if gamma else 0.0)
    return at * ce * m ** gamma, float(x.size), at * grad


def h_sigmoid_focal(x, t, alpha=0.25, gamma=2.0):
    p, q = expit(x), expit(-x)
    ce = times(1.0 - t, softplus(x)) + times(t, softplus(-x))
    m = t * q + (1.0 - t) * p
    at = alpha * t + (1 - alpha) * (1 - t) if alpha >= 0 else np.ones_like(x)
    dm, d2ce = (1 - 2 * t) * p * q, p * q
    d2m = dm * (1 - 2 * p)
    h = m ** gamma * d2ce
    if gamma:
        h = (h + 2 * gamma * m ** (gamma - 1) * dm * (p - t) + gamma * (gamma - 1) * m ** (gamma - 2) * dm ** 2 * ce
             + gamma * m ** (gamma - 1) * d2m * ce)
    return at * h


def _exact_focal_parts(x, y, params):
    """alpha_t, ce, m**gamma and the summands of the gradient's and the Hessian's brackets
    (d = m' / m, the limits at m = 0 and x = +-inf taken: y = 0: d = s(-x), y = 1: d = -s(x))."""
    mp = mpmath_module()
    alpha, gamma = params["alpha"], params["gamma"]
    s, sn = exact_sigmoid(x), exact_sigmoid(-x)
    neg = 1 - y
    ce = exact_times(neg, exact_softplus(x)) + exact_times(y, exact_softplus(-x))
    m = y * sn + neg * s
    mg = m ** gamma if gamma != 0 else mp.mpf(1)
    at = alpha * y + (1 - alpha) * neg if alpha >= 0 else mp.mpf(1)
    d = sn if y == 0 else (-s if y == 1 else (1 - 2 * y) * s * sn / m)
    cd = mp.mpf(0) if d == 0 else ce * d
    a, b = neg * s, y * sn  # ce' = a - b
    grad_parts = [a, -b, gamma * cd]
    hess_parts = [s * sn, 2 * gamma * a * d, -2 * gamma * b * d, gamma * (gamma - 1) * cd * d, gamma * cd * (sn - s)]
    return at, ce, mg, grad_parts, hess_parts


def _subtracted(parts, scale):
    """The largest summand when they have both signs (else 0), scaled: ``terms``."""
    mp = mpmath_module()
    if any(v > 0 for v in parts) and any(v < 0 for v in parts):
        return abs(scale) * max(abs(v) for v in parts)
    return mp.mpf(0)


def exact_sigmoid_focal(x, y, w, pw, params):
    mp = mpmath_module()
    if mp.isnan(x):  # NaN, even where alpha_t = 0 (fastloss and torchvision alike)
        return x, x, mp.mpf(0)
    at, ce, mg, grad_parts, _ = _exact_focal_parts(x, y, params)
    scale = exact_times(at, mg)
    return exact_times(at, ce * mg), exact_times(scale, mp.fsum(grad_parts)), _subtracted(grad_parts, scale)


def exact_hessian_sigmoid_focal(x, y, w, pw, params):
    if mpmath_module().isnan(x):
        return x, mpmath_module().mpf(0)
    at, _, mg, _, hess_parts = _exact_focal_parts(x, y, params)
    scale = exact_times(at, mg)
    return exact_times(scale, mpmath_module().fsum(hess_parts)), _subtracted(hess_parts, scale)


def torch_sigmoid_focal(x, t, *, alpha=0.25, gamma=2.0, reduction):
    # torchvision.ops.sigmoid_focal_loss (vision/torchvision/ops/focal_loss.py), with
    # fastloss's default reduction
    p = torch.sigmoid(x)
    ce_loss = torch.nn.functional.binary_cross_entropy_with_logits(x, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce_loss * ((1 - p_t) ** gamma)
    if alpha >= 0:
        alpha_t = alpha * t + (1 - alpha) * (1 - t)
        loss = alpha_t * loss
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def focal_accuracy(params):
    return (f"alpha={params.get('alpha', 0.25)},gamma={params.get('gamma', 2.0)}",
            lambda d: (*grid(signed(LOGITS[d]), LOGIT_TARGETS, d), dict(params)))


SIGMOID_FOCAL = LossReference(
    "sigmoid_focal_loss",
    cases=LossCases(
        make_bce_logits, ELEMENTWISE_SHAPES,
        ({}, {"gamma": 0.0}, {"alpha": -1.0}, {"alpha": -1.0, "gamma": 0.0}, {"alpha": 0.5, "gamma": 1.0},
         {"gamma": 0.5}, {"alpha": 1.0, "gamma": 3.0}, {"alpha": 0.0, "gamma": 1.5}),
    ),
    formula=f_sigmoid_focal, exact=exact_sigmoid_focal, hessian=h_sigmoid_focal,
    torch_formula=torch_sigmoid_focal, gradient_support="everywhere",
    # targets in [0, 1] and alpha <= 1 (the registry's domains): alpha_t >= 0, the loss >= 0
    non_negative_if=always,
    gradient_sign="hard targets",  # >= 0 at y = 0, <= 0 at y = 1
    accuracy_variants=tuple(focal_accuracy(p) for p in (
        {}, {"alpha": -1.0, "gamma": 0.0}, {"alpha": 0.25, "gamma": 0.0}, {"alpha": -1.0, "gamma": 1.0},
        {"alpha": 0.5, "gamma": 0.5}, {"alpha": 0.75, "gamma": 3.0}, {"alpha": 1.0, "gamma": 2.0})),
    # hard targets stay within BCE with logits' bounds + ~1 ULP; soft targets carry the
    # rounding of m = 1 - p_t (and of 1 - y, alpha_t) through m**gamma, whose condition
    # number is gamma: the worst errors are at soft targets, larger gamma, and in float64
    # (1 - 0.3 rounds there, not in float32)
    ulp_bounds={F32: (3.5, 4.0), F64: (5.0, 4.5)},
    # float32 in float64 (rounded once); float64 with NumPy's power of the rounded m
    numpy_ulp_bounds={F32: (1.0, 0.75), F64: (5.0, 7.5)},  # float32: float64 math rounded once (measured 0.496)
    # PyTorch forms 1 - p_t, which cancels to 0 where p_t rounds to 1 (y = 1, x >= 17 in
    # float32, 37 in float64; y = 0, x <= -17 resp. -37): a zero loss and gradient
    torch_loses={
        F32: (farray(F32, 17, 20, 30, -20, -30), farray(F32, 1, 1, 1, 0, 0)),
        F64: (farray(F64, 37, 40, 100, -40, -100), farray(F64, 1, 1, 1, 0, 0)),
    },
    huge_terms=lambda big, n: (big, np.zeros(n, np.float32), {"alpha": -1.0}),  # y = 0: the term is x
    half_max_cases=lambda dtype, m: [
        (np.array([0.9 * m, -0.9 * m, 2.0, -3.0], dtype), np.array([0.5, 0.25, 1.0, 0.0], dtype), {},
         "huge logits, soft targets"),
        (np.array([0.9 * m, -0.9 * m, 2.0, -3.0], dtype), np.array([0.0, 1.0, 1.0, 0.0], dtype),
         {"gamma": 1.0}, "huge logits, hard targets")],  # alpha_t 0.75 and 0.25: the exact sum is 0.9 max
    held_to_exact=lambda x, t: True,  # its limits at +-inf included
    exact_limits=True,
    exp_log=True,
)


# =========================================================================== kl_div


def f_kl_div(x, t, log_target=False):
    with np.errstate(all="ignore"):
        if log_target:
            coef = np.exp(t)
            term = np.where(np.isfinite(t) & np.isinf(t - x), t - x, coef * (t - x))  # exp(t) > 0
        else:
            coef = t
            term = t * (np.log(t) - x)
    # a zero coefficient (t == 0; t == -inf with log_target) gives 0 (fastloss; PyTorch:
    # 0 * inf = NaN at x = +-inf), NaN for NaN x
    zero = t == (-np.inf if log_target else 0.0)
    per = np.where(zero, np.where(np.isnan(x), x, 0.0), term)
    return per, float(x.size), -coef


def h_kl_div(x, t, log_target=False):
    return np.zeros(x.shape)  # linear in x


def make_kl_div(rng, shape, params, form):
    # Probabilities in (0, 1] with exact zeros (about 1 in 8), or log-probabilities
    # (log_target); input log-probabilities, away from x = log y (where the loss cancels).
    u = np.asarray(rng.uniform(0.02, 1.0, shape))
    if params.get("log_target", False):
        t = np.log(u)
    else:
        t = np.where(np.asarray(rng.random(shape)) < 0.125, 0.0, u)
    draw = lambda r, s: np.log(np.asarray(r.uniform(0.02, 1.0, s)))  # noqa: E731
    log_y = np.log(u)

    def per_and_terms(xv):
        return u * (log_y - xv), u * np.maximum(np.abs(log_y), np.abs(xv))

    return _away_from_cancellation(rng, draw, draw(rng, shape), per_and_terms), t


def _exact_kl_parts(x, y, params):
    """(loss, gradient, the loss's subtracted-term magnitude), exact."""
    mp = mpmath_module()
    zero = mp.mpf(0)
    if params["log_target"]:
        coef = mp.exp(y)
        term, loss_terms = coef * exact_sub(y, x), zero  # the difference: one rounding
    else:
        coef = y
        log_y = mp.log(y) if y > 0 else (-mp.inf if y == 0 else mp.nan)
        term = y * (log_y - x)
        loss_terms = max(abs(y * log_y), abs(y * x)) if y > 0 and mp.isfinite(x) and mp.isfinite(y) else zero
    value = (mp.nan if mp.isnan(x) else zero) if coef == 0 else term
    return value, -coef, loss_terms


def exact_kl_div(x, y, w, pw, params):
    value, grad, _ = _exact_kl_parts(x, y, params)
    return w * value, w * grad, mpmath_module().mpf(0)


def kl_loss_terms(x, y, w, pw, params):
    return w * _exact_kl_parts(x, y, params)[2]


def kl_gradient_sign(x, t, kw, grad):
    """-y (-exp(y)): <= 0 wherever the target is a probability (>= 0) or a log-probability."""
    return (grad > 0) & (kw.get("log_target", False) | (t >= 0))


# log-probabilities (input, and target with log_target) and probabilities of the accuracy
# variants: x = log y exactly and one ULP off (the loss cancels), tiny and subnormal
# probabilities, x from -1e30 to 1e30 and +-inf (a zero target gives 0 there).
def kl_log_probs(dtype):
    info = np.finfo(dtype)
    big = 1e30 if dtype == F32 else 1e300
    return (0.0, -1e-30, -1e-8, -0.1, -0.5, float(dtype.type(np.log(0.5))), -1.0, -2.3, -10.0, -50.0, -87.0, -100.0,
            -700.0 if dtype == F64 else -104.0, -1e4, -big, 1.0, 20.0, big, float(info.max), -float(info.max),
            np.inf, -np.inf)


def kl_probs(dtype):
    info = np.finfo(dtype)
    return (0.0, 1.0, 0.5, 0.1, 0.3, 0.9999999, 1e-8, 1e-30, float(info.tiny), float(info.smallest_subnormal), 2.0,
            1e30)


def kl_log_targets(dtype):
    return (0.0, -1e-8, -0.5, -1.0, -10.0, -80.0, -104.0, -200.0, -745.0, -1e4, 1.0, 10.0, -np.inf)


def kl_variant(log_target):
    def build(d):
        xs = kl_log_probs(d)
        if log_target:
            x, t = grid([v for v in xs if np.isfinite(v)], kl_log_targets(d), d)
        else:
            x, t = grid(xs, kl_probs(d), d)
        with np.errstate(all="ignore"):  # inf - inf: not a value (+-inf x against a huge target)
            keep = ~np.isnan(f_kl_div(x.astype(np.float64), t.astype(np.float64), log_target)[0])
        return x[keep], t[keep], {"log_target": log_target}
    return build


KL_DIV = LossReference(
    "kl_div",
    cases=LossCases(make_kl_div, ELEMENTWISE_SHAPES, ({}, {"log_target": True})),
    formula=f_kl_div, exact=exact_kl_div, exact_loss_terms=kl_loss_terms, hessian=h_kl_div,
    gradient_support="everywhere",
    non_negative_if=None,  # a term y (log y - x) is negative where x > log y (their sum is not)
    gradient_sign=kl_gradient_sign,
    accuracy_variants=(
        ("log_target=False", kl_variant(False)),
        ("log_target=True", kl_variant(True)),
    ),
    ulp_bounds={F32: (1.5, 0.5), F64: (2.0, 1.0)},
    # float32 in float64, rounded once; float64: NumPy's exp differs per level (the gradient)
    numpy_ulp_bounds={F32: (0.5, 0.5), F64: {"avx512": (2.0, 1.0), "avx2": (2.0, 0.5), "baseline": (2.0, 0.5)}},
    huge_terms=lambda big, n: (-big, np.ones(n, np.float32), {}),  # y = 1: the term is -x
    half_max_cases=lambda dtype, m: [
        (np.array([-0.9 * m, -1.0, 0.0, -2.0], dtype), np.array([0.5, 0.25, 0.0, 1.0], dtype), {},
         "log-probability -0.9 max"),
        (np.array([-0.9 * m, -1.0, 0.0, -2.0], dtype), np.array([0.0, -1.5, -np.inf, -0.5], dtype),
         {"log_target": True}, "log-probability -0.9 max, log_target")],
    # PyTorch gives NaN for 0 * inf where a zero target meets an infinite input: held to the
    # exact value and limits wherever an operand is not finite
    held_to_exact=lambda x, t: not (np.isfinite(x) and np.isfinite(t)),
    exact_limits=True,
    exp_log=True,
)


# =========================================================================== softmax_focal_loss
# The multiclass focal loss (Lin et al. 2017) on softmax: -w_y (1 - q)**gamma log q, q = p_y.
# PyTorch has none: its formula is written in torch below. gamma = 0 is cross_entropy.


def _focal_rows(z, tt, weight, ignore_index, gamma):
    """Per row (float64): kept, y, row index, w_y, p, q, u = 1 - q (the other classes'
    probabilities summed: no cancellation), log q (-log1p(u / q) where q > 1/2: the textbook
    log-softmax rounds a tiny log q to 0 there), q log(q) / u, u**gamma and G = q f'(q)
    (f(q) = -(1 - q)**gamma log q), its term gamma q (1 - q)**(gamma - 1) log q written as
    gamma (1 - q)**gamma (q log(q) / (1 - q)): 0 at q = 0, -gamma (1 - q)**gamma at q = 1,
    no 0 * inf for gamma < 1."""
    n_classes = z.shape[1]
    w = np.ones(n_classes) if weight is None else np.asarray(weight, np.float64)
    kept = tt != ignore_index
    y = np.where(kept, tt, 0)
    idx = np.arange(len(tt))
    wy = np.where(kept, w[y], 0.0)
    logp = log_softmax_rows(z)
    p = np.exp(logp)
    q = p[idx, y]
    u = np.where(np.arange(n_classes)[None, :] == y[:, None], 0.0, p).sum(axis=1)
    with np.errstate(all="ignore"):
        log_q = np.where(q > 0.5, -np.log1p(u / q), logp[idx, y])
        ratio = np.where(u > 0, log_q / u, -1.0)  # log(q) / (1 - q)
        qr = np.where(q == 0, 0.0, q * ratio)
        ug = u ** gamma
        g_coef = ug * (gamma * qr - 1.0)
    return kept, y, idx, wy, p, q, u, log_q, qr, ug, g_coef


def f_softmax_focal(x, t, weight=None, ignore_index=-100, gamma=2.0):
    z, tt, back, lshape = rows(x, t)
    kept, y, idx, wy, p, q, u, log_q, qr, ug, g_coef = _focal_rows(z, tt, weight, ignore_index, gamma)
    per = np.where(kept, -wy * ug * log_q, 0.0)
    onehot = np.zeros_like(z)
    onehot[idx, y] = 1.0
    d = onehot - p
    d[idx, y] = u
    grad = np.where(kept[:, None], (wy * g_coef)[:, None] * d, 0.0)
    return per.reshape(lshape), float(wy.sum()), back(grad)


def h_softmax_focal(x, t, weight=None, ignore_index=-100, gamma=2.0):
    # w_y ((onehot - p)**2 D - G p (1 - p)), D = gamma q u**(gamma - 1) (log q + 2 - (gamma - 1) q log(q) / u),
    # with u**(gamma - 1) (onehot - p)**2 as u**gamma (onehot - p) ((onehot - p) / u) (|.| / u <= 1)
    z, tt, back, lshape = rows(x, t)
    kept, y, idx, wy, p, q, u, log_q, qr, ug, g_coef = _focal_rows(z, tt, weight, ignore_index, gamma)
    with np.errstate(all="ignore"):
        qk = np.where(q == 0, 0.0, q * log_q) + 2.0 * q - (gamma - 1.0) * q * qr
        d = -p.copy()
        d[idx, y] = u
        over_u = np.where(u[:, None] > 0, np.abs(d) / u[:, None], 0.0)
        one_minus = 1.0 - p
        one_minus[idx, y] = u
        h = (gamma * ug * qk)[:, None] * np.abs(d) * over_u - g_coef[:, None] * p * one_minus
        h = np.where(ug[:, None] == 0, 0.0, h)
    return back(np.where(kept[:, None], wy[:, None] * h, 0.0))


def _exact_focal_row(z, target, params):
    """(w-free) loss, gradient and Hessian's diagonal of one row, exactly (mpmath)."""
    mp = mpmath_module()
    gamma = mp.mpf(params.get("gamma", 2.0))
    nlogp, e = neg_log_softmax(z)
    s = mp.fsum(e)
    p = [v / s for v in e]
    u = mp.fsum(e[d] for d in range(len(z)) if d != target) / s  # 1 - q without cancellation
    q, log_q = p[target], -nlogp[target]
    ug = u ** gamma if gamma != 0 else mp.mpf(1)
    qr = mp.mpf(0) if q == 0 else q * (log_q / u if u != 0 else mp.mpf(-1))
    g_coef = ug * (gamma * qr - 1)
    ql = mp.mpf(0) if q == 0 else q * log_q
    qk = ql + 2 * q - (gamma - 1) * q * qr
    d = [u if c == target else -pc for c, pc in enumerate(p)]
    hess = [gamma * ug * qk * abs(dc) * (abs(dc) / u if u != 0 else 0) - g_coef * pc * (u if c == target else 1 - pc)
            for c, (dc, pc) in enumerate(zip(d, p))]
    return ug * nlogp[target], [g_coef * dc for dc in d], hess


def exact_softmax_focal(z, target, w, params):
    mp = mpmath_module()
    zeros = [mp.mpf(0)] * len(z)
    if target == params.get("ignore_index", -100):
        return zeros[0], zeros, zeros
    w_y = w[target]
    value, grad, _ = _exact_focal_row(z, target, params)
    # (onehot - p) is formed from the sums (no cancellation) and G's two terms have one sign:
    # nothing is subtracted
    return w_y * value, [w_y * g for g in grad], zeros


def torch_softmax_focal(x, t, *, reduction, weight=None, ignore_index=-100, gamma=2.0):
    # the textbook form in torch: -w_y (1 - q)**gamma log q with log q from log_softmax
    if x.ndim == 1:
        out = torch_softmax_focal(x[None], t.reshape(1), reduction=reduction, weight=weight,
                                  ignore_index=ignore_index, gamma=gamma)
        return out.reshape(()) if reduction == "none" else out
    kept = t != ignore_index
    y = torch.where(kept, t, torch.zeros_like(t))
    log_q = torch.log_softmax(x, dim=1).gather(1, y.unsqueeze(1)).squeeze(1)
    w_y = torch.ones_like(log_q) if weight is None else weight[y]
    w_y = torch.where(kept, w_y, torch.zeros_like(w_y))
    loss = torch.where(kept, -w_y * (1 - log_q.exp()) ** gamma * log_q, torch.zeros_like(log_q))
    if reduction == "mean":
        return loss.sum() / w_y.sum()
    if reduction == "sum":
        return loss.sum()
    return loss


def focal_class_variant(params, build=None):
    label = ",".join(f"{k}={v}" for k, v in params.items()) or "gamma=2.0"
    build = build or (lambda d: (*class_inputs(d), {}))

    def make(d):
        x, t, kw = build(d)
        return x, t, dict(kw, **params)

    return label, make


SOFTMAX_FOCAL = LossReference(
    "softmax_focal_loss",
    cases=LossCases(
        make_cross_entropy, CLASS_SHAPES,
        ({}, {"weight": CLASS_WEIGHT}, {"gamma": 0.0}, {"gamma": 0.5}, {"gamma": 1.0, "weight": CLASS_WEIGHT},
         {"gamma": 3.5}),
        forms=("indices", "indices+ignored"),
        form_params={
            "indices+ignored": (
                {}, {"ignore_index": -100}, {"weight": CLASS_WEIGHT}, {"ignore_index": 1, "gamma": 0.5},
                {"ignore_index": -3, "weight": CLASS_WEIGHT, "gamma": 0.0},
            ),
        },
        large_shape=(5000, 40),
    ),
    formula=f_softmax_focal, exact=exact_softmax_focal, hessian=h_softmax_focal, torch_formula=torch_softmax_focal,
    gradient_support="kept samples",
    non_negative_if=always,
    gradient_sign="target class",  # G <= 0: <= 0 at the target class, >= 0 elsewhere
    accuracy_variants=(
        focal_class_variant({}),
        focal_class_variant({"gamma": 0.0}),
        focal_class_variant({"gamma": 0.5}),
        focal_class_variant({"gamma": 1.0}),
        focal_class_variant({"gamma": 4.5}),
        ("weight", lambda d: (*class_inputs(d), {"weight": class_weight(d)})),
        ("weight,gamma=0.25", lambda d: (*class_inputs(d), {"weight": class_weight(d), "gamma": 0.25})),
        ("ignore_index", lambda d: ignored(class_inputs(d), 2)),
        ("(N,C,d),gamma=1.5", lambda d: (*spatial(class_inputs(d))[:2], {"gamma": 1.5})),
    ),
    # measured (every SIMD level: the same worst values): cross_entropy's errors (the rounding
    # of x_c - m before exp: about |x_c - m| / 2 ULP on the random rows), and (1 - q)**gamma
    # multiplies the relative error of 1 - q (the other classes' exp summed) by gamma: the
    # worst are at gamma = 4.5 (float64 loss 8.06, gradient 12.4; float32 5.1 and 6.9)
    ulp_bounds={F32: (5.5, 7.0), F64: (8.5, 12.5)},
    # NumPy's own exp (float32: one per level; float64 at AVX-512) differs in the last bits
    numpy_ulp_bounds={F32: {"avx512": (5.5, 7.5), "avx2": (5.5, 7.5), "baseline": (5.5, 9.5)},
                      F64: {"avx512": (8.5, 13.0), "avx2": (8.5, 12.5), "baseline": (8.5, 12.5)}},
    huge_terms=lambda big, n: (np.stack([np.zeros(n, np.float32), big], axis=1), np.zeros(n, np.int64), {}),
    half_max_cases=lambda dtype, m: [
        (np.array([[0.9 * m, -0.9 * m, 0.0], [1.0, 2.0, 3.0]], dtype), np.array([0, 2]), {}, "huge logits"),
        (np.array([[0.9 * m, -0.9 * m, 0.0], [1.0, 2.0, 3.0]], dtype), np.array([0, 2]),
         {"gamma": 0.5}, "huge logits, gamma=0.5")],
    held_to_exact=_finite_logit_row,
    exp_log=True,
)


# =========================================================================== the table

RECORDS: tuple[LossReference, ...] = (
    MSE, L1, HUBER, SMOOTH_L1, BCE, BCE_LOGITS, CROSS_ENTROPY, NLL, MULTI_MARGIN, HINGE, SQUARED_HINGE,
    PINBALL,
    POISSON_DEVIANCE, GAMMA_DEVIANCE, TWEEDIE_DEVIANCE,
    LOG_COSH, SIGMOID_FOCAL,
    POISSON_NLL, KL_DIV, SOFTMAX_FOCAL,
    PSEUDO_HUBER,
)


class _References(dict):
    def __missing__(self, name):
        if name in BY_NAME:
            raise IncompleteReference(f"the registry loss {name!r} has no LossReference in tests/support/losses.py")
        raise KeyError(name)


REFERENCES: dict[str, LossReference] = _References((r.name, r) for r in RECORDS)


@functools.lru_cache(maxsize=None)
def _referenced():
    return tuple(spec for spec in LOSSES
                 if spec.name in REFERENCES and not REFERENCES[spec.name].missing_fields())


def referenced_losses():
    """The registry rows (in registry order) whose record exists and is complete: what the
    test modules derive their per-loss parameters from. A loss left out here fails
    tests/contract/test_loss_references.py by name."""
    return list(_referenced())


def referenced_names(kind=None):
    return [spec.name for spec in referenced_losses() if kind is None or spec.kind == kind]
