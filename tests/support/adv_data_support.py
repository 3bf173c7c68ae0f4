"""Shared by the data half of the adversarial suite (the test_adv_*.py of tests/contract/ and
tests/numerics/).

Valid calls for every loss of the registry on its two code paths, the comparisons the
files make (bitwise against a native / contiguous / plain copy; NaN- and inf-exact against
a reference) and the references themselves (PyTorch when installed, else the float64
formulas of tests/support/reference.py; mpmath for exact values).
"""

from __future__ import annotations

import math

import numpy as np

import fastloss
import fastloss.numpy_backend
import reference
from cases import CASES, CLASS_WEIGHT, Case
from fastloss._registry import BY_NAME, LOSSES, REDUCTIONS
from helpers import assert_bitwise, assert_grad_close, assert_value_close, compute_dtype, loss_fn
from losses import REFERENCES

NAMES = [spec.name for spec in LOSSES]
CLASS_NAMES = [spec.name for spec in LOSSES if spec.kind == "classes"]
ELEMENTWISE_NAMES = [spec.name for spec in LOSSES if spec.kind == "elementwise"]
WEIGHTED_NAMES = [spec.name for spec in LOSSES if spec.weight]
FLOATS = (np.float32, np.float64)
NUMPY_API = fastloss.numpy_backend

# the two code paths of the compiled backend: "fast" (exact C-contiguous ndarrays, no
# weight, default parameter objects, 2-D class input) and "general" (the front layer)
PATHS = ("fast", "general")


def fresh(value):
    """A new object equal to ``value``: not the registry's default object, so the call
    takes the general path with the same semantics."""
    return type(value)(repr(value)) if isinstance(value, float) else value


def general_params(name) -> dict:
    """Scalar parameters equal to the defaults but other objects (general path)."""
    spec = BY_NAME[name]
    return {p.name: fresh(p.default) for p in spec.params if isinstance(p.default, float)}


def valid_call(name, path="fast", dtype=np.float64, form=None, shape=None, seed=0):
    """``(x, t, kwargs)`` of a valid call, native C-contiguous arrays.

    "fast": no weight, default parameters, 2-D class input with int64 indices.
    "general": every array parameter the loss takes (weight, pos_weight) and equal-to-default
    parameters given as other objects; class losses (but multi-margin) on a 4-D input."""
    spec = BY_NAME[name]
    form = form or ("indices+ignored" if spec.ignore_index else CASES[name].forms[0])
    params = {}
    if path == "general":
        if spec.weight:
            params["weight"] = CLASS_WEIGHT if spec.weight == "class" else "full"
        if spec.pos_weight:
            params["pos_weight"] = "last"
    if shape is None:
        if spec.kind == "elementwise":
            shape = (6, 7)
        else:
            shape = (9, 5) if path == "fast" or spec.max_input_dims else (3, 4, 2, 3)
    x, t, kw = Case(name, shape, form, tuple(sorted(params.items()))).generate(dtype, seed)
    if path == "general":
        kw.update(general_params(name))
    return np.ascontiguousarray(x), np.ascontiguousarray(t), kw


def array_args(name, kw, form=None):
    """Names of the array operands of a call: input, target and the array keywords."""
    return ["input", "target"] + [k for k, v in kw.items() if isinstance(v, np.ndarray)]


def call(api, name, grad, x, t, kw, reduction, **extra):
    with np.errstate(all="ignore"):
        return loss_fn(api, name, grad=grad)(x, t, reduction=reduction, **kw, **extra)


def all_results(api, name, x, t, kw, reductions=REDUCTIONS):
    """{(reduction, "loss" | "grad-loss" | "grad"): value} of NAME and NAME_grad."""
    out = {}
    for reduction in reductions:
        out[reduction, "loss"] = call(api, name, False, x, t, kw, reduction)
        out[reduction, "grad-loss"], out[reduction, "grad"] = call(api, name, True, x, t, kw, reduction)
    return out


def assert_all_bitwise(actual: dict, expected: dict, what=""):
    for key in expected:
        assert_bitwise(actual[key], expected[key], f"{what} {key}")


def replace(x, t, kw, which, value):
    """The call with operand ``which`` (input, target or a keyword) replaced."""
    if which == "input":
        return value, t, kw
    if which == "target":
        return x, value, kw
    return x, t, {**kw, which: value}


def operand(x, t, kw, which):
    return x if which == "input" else t if which == "target" else kw[which]


# --------------------------------------------------------------------------- references


def reference_fn(name):
    """PyTorch (or, without it, the float64 formulas); the hinges always their formulas."""
    return reference.formula_reference if name in reference.NOT_IN_TORCH else reference.reference


def exact_limits_override(name, x, t, kw, loss_none, grad_sum):
    """Where the input, target or pos_weight is not finite, the exact (mpmath) value and
    gradient replace the reference's, for a loss whose record says PyTorch gives NaN at its
    finite limits there (``exact_limits``: BCE with logits); fastloss is held to the exact
    limit, as in test_edge."""
    shape = np.shape(x)
    pw = np.broadcast_to(np.asarray(kw.get("pos_weight", 1.0), np.float64), shape)
    w = np.broadcast_to(np.asarray(kw.get("weight", 1.0), np.float64), shape)
    xf, tf = np.asarray(x, np.float64), np.asarray(t, np.float64)
    loss_none, grad_sum = np.array(loss_none, np.float64), np.array(grad_sum, np.float64)
    bad = ~(np.isfinite(xf) & np.isfinite(tf) & np.isfinite(pw))
    scalars = {k: v for k, v in kw.items() if not isinstance(v, np.ndarray)}
    for i in zip(*np.nonzero(bad)):
        v, g, _ = reference.exact_terms(name, np.array([xf[i]]), np.array([tf[i]]),
                                        {**scalars, "pos_weight": np.array([pw[i]]), "weight": np.array([w[i]])})
        loss_none[i], grad_sum[i] = float(v[0]), float(g[0])
    return loss_none, grad_sum


def reference_results(name, x, t, kw, reduction):
    """``(loss, grad)`` of the reference, with the exact limits where the loss's record
    asks for them (``exact_limits``: BCE with logits, the deviances); "mean" divides by the
    divisor of the record's formula (the count, or the weight sum)."""
    ref = reference_fn(name)
    with np.errstate(all="ignore"):
        if not REFERENCES[name].exact_limits:
            return ref(name, x, t, kw, reduction)
        per, grad = ref(name, x, t, kw, "none")
        per, grad = exact_limits_override(name, x, t, kw, per, grad)
        if reduction == "none":
            return per, grad
        total = float(np.sum(per)) if not np.isfinite(per).all() else math.fsum(per.reshape(-1).tolist())
        if reduction == "sum":
            return total, grad
        x64, t64, kw64 = reference._float64_args(x, t, kw)
        divisor = REFERENCES[name].formula(x64, t64, **kw64)[1]
        return (total / divisor if divisor else math.nan), grad / divisor


def assert_matches(actual_loss, actual_grad, ref_loss, ref_grad, dtype, what=""):
    """NaN where the reference has NaN, inf of the same sign where it has inf, close
    elsewhere (rtol of the compute dtype)."""
    from helpers import rtol_for

    rtol = rtol_for(dtype)
    assert_value_close(actual_loss, ref_loss, rtol, what=f"{what} loss")
    if actual_grad is not None:
        assert_grad_close(actual_grad, ref_grad, rtol, what=f"{what} grad")


def assert_backends_agree(name, x, t, kw, results: dict, dtype, what=""):
    """The same call on the NumPy backend: same NaN and inf positions, close values."""
    other = all_results(NUMPY_API, name, x, t, kw, reductions=sorted({r for r, _ in results}))
    for key, value in results.items():
        assert_matches(value, None, other[key], None, dtype, what=f"{what} backends disagree at {key}:")


# --------------------------------------------------------------------------- exact (mpmath)


def exact_results(name, x, t, kw, reduction):
    """``(loss, grad)`` exact (mpmath at 256 bits) then rounded to float64: the sum or mean
    of the exact per-term losses and the exact gradient of the returned value. Divisors by
    the registry's "mean" rule. inf and NaN follow mpmath (inf - inf is NaN)."""
    import mpmath as mp

    spec = BY_NAME[name]
    with mp.workprec(reference.EXACT_PREC):
        per, grad, _ = reference.exact_terms(name, x, t, kw)
        if reduction == "none":
            return (np.array([float(v) for v in per.reshape(-1)]).reshape(per.shape),
                    np.array([float(v) for v in grad.reshape(-1)]).reshape(grad.shape))
        total = mp.fsum(per.reshape(-1).tolist())
        if reduction == "sum":
            divisor = mp.mpf(1)
        else:
            divisor = _exact_divisor(spec, x, t, kw)
        loss = total / divisor
        g = np.array([float(v / divisor) for v in grad.reshape(-1)]).reshape(grad.shape)
        return float(loss), g


def _exact_divisor(spec, x, t, kw):
    import mpmath as mp

    shape = np.shape(x)
    w = kw.get("weight")
    if spec.mean_divisor == "weight_sum" and w is not None:
        return mp.fsum(mp.mpf(float(v)) for v in np.broadcast_to(np.asarray(w, np.float64), shape).reshape(-1))
    if spec.kind == "elementwise":
        return mp.mpf(int(np.prod(shape)))
    t = np.asarray(t)
    if t.shape == shape:  # class probabilities
        return mp.mpf(int(np.prod(shape)) // shape[1 if len(shape) > 1 else 0])
    if spec.mean_divisor == "target_weight":
        kept = t[t != kw.get("ignore_index", -100)].reshape(-1)
        if w is None:
            return mp.mpf(kept.size)
        return mp.fsum(mp.mpf(float(w[int(c)])) for c in kept)
    return mp.mpf(t.size)


def assert_close_to_exact(actual_loss, actual_grad, x, t, kw, name, reduction, dtype, rtol=None, what=""):
    """Finite wherever the exact value (rounded to the compute dtype) is finite; inf of the
    same sign where it overflows; NaN where it is NaN; else within rtol."""
    from helpers import rtol_for

    rtol = rtol_for(dtype) if rtol is None else rtol
    e_loss, e_grad = exact_results(name, x, t, kw, reduction)
    with np.errstate(over="ignore"):
        e_loss_c = np.asarray(e_loss, np.float64).astype(dtype).astype(np.float64)
        e_grad_c = np.asarray(e_grad, np.float64).astype(dtype).astype(np.float64)
    assert_value_close(actual_loss, e_loss_c, rtol, what=f"{what} loss ({reduction}) vs exact")
    if actual_grad is not None:
        assert_grad_close(actual_grad, e_grad_c, rtol, what=f"{what} grad ({reduction}) vs exact")


__all__ = [
    "NAMES", "CLASS_NAMES", "ELEMENTWISE_NAMES", "WEIGHTED_NAMES", "FLOATS", "NUMPY_API", "PATHS",
    "fresh", "general_params", "valid_call", "array_args", "call", "all_results", "assert_all_bitwise",
    "replace", "operand", "reference_fn", "reference_results", "assert_matches", "assert_backends_agree",
    "exact_results", "assert_close_to_exact", "compute_dtype", "BY_NAME", "REDUCTIONS",
]


def operands(name, path):
    """The array operands a call of ``name`` takes on ``path``: input and target, and on the
    general path the weights the loss has."""
    spec = BY_NAME[name]
    ops = ["input", "target"]
    if path == "general":
        ops += [k for k in ("weight", "pos_weight") if getattr(spec, k)]
    return ops
