"""Building blocks of the per-loss references in ``losses.py``: float64 pieces (NumPy),
exact pieces (mpmath) and the optional PyTorch import. Nothing here knows a loss by name:
the per-loss facts are all in ``losses.py``."""

from __future__ import annotations

import numpy as np

try:  # the reference when installed
    import torch
    import torch.nn.functional as F
except ImportError:  # pragma: no cover - exercised on machines without torch
    torch = None
    F = None

HAVE_TORCH = torch is not None

# PyTorch's binary_cross_entropy gradient divides by max(x * (1 - x), EPSILON) with
# EPSILON a C++ *float* 1e-12 (aten/src/ATen/native/Loss.cpp), i.e. 9.999999960041972e-13
# once widened to double.
BCE_GRAD_EPSILON = float(np.float32(1e-12))


# =========================================================================== float64 (NumPy)

def broadcast(weight, shape):
    if weight is None:
        return np.ones(shape)
    return np.broadcast_to(np.asarray(weight, np.float64), shape)


def sign_torch(r):
    """sign with sign(NaN) = 0: PyTorch's L1 gradient."""
    return np.where(r > 0, 1.0, np.where(r < 0, -1.0, 0.0))


def softplus(x):
    """log(1 + e^x), exact for every real x including +-inf."""
    return np.logaddexp(0.0, x)


def times(a, b):
    """a * b with 0 * inf = 0: the limit of the loss as x -> +-inf for a fixed target."""
    return np.where(a == 0, 0.0, a * b)


def expit(x):
    return np.where(x >= 0, 1.0 / (1.0 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1.0 + np.exp(-np.abs(x))))


def rows(x, t):
    """Class losses on rows: x -> (M, C) with the class axis last, t -> (M,)."""
    ax = 0 if x.ndim == 1 else 1
    xm = np.moveaxis(x, ax, -1)
    back = lambda g: np.moveaxis(g.reshape(xm.shape), -1, ax)  # noqa: E731
    tm = np.asarray(t)
    if tm.shape == x.shape:  # class probabilities
        tm = np.moveaxis(tm, ax, -1).reshape(-1, x.shape[ax])
    else:
        tm = tm.reshape(-1)
    return xm.reshape(-1, x.shape[ax]), tm, back, xm.shape[:-1]


def log_softmax_rows(z):
    """log softmax of each row: (z - max) - log(sum(exp(z - max))), the stable textbook
    form (an infinite logit makes z - max NaN and so the whole row NaN, as in PyTorch)."""
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


# =========================================================================== exact (mpmath)
# Differences of inputs exactly (no rounding at all), everything else at EXACT_PREC bits.

EXACT_PREC = 256


def mpmath_module():
    import mpmath

    return mpmath


def exact_sub(a, b):
    return mpmath_module().fsub(a, b, exact=True)


def exact_softplus(v):
    """log(1 + e^v) for any mpf v (the limits at +-inf)."""
    mp = mpmath_module()
    if mp.isinf(v):
        return v if v > 0 else mp.mpf(0)
    if v > 0:  # v + log1p(e^-v): no huge exp for huge v
        return v + mp.log1p(mp.exp(-v))
    return mp.log1p(mp.exp(v))


def exact_sigmoid(v):
    mp = mpmath_module()
    if mp.isinf(v):
        return mp.mpf(1) if v > 0 else mp.mpf(0)
    return 1 / (1 + mp.exp(-v))


def exact_times(a, b):
    """a * b with 0 * inf = 0 (the limit of a term whose coefficient is 0)."""
    return a * 0 if a == 0 else a * b


def neg_log_softmax(z):
    """-log softmax(z)_c for every c, exactly: (m - z_c) + log(sum_d e^(z_d - m)) for
    z_c < m (two positive terms), log1p(sum_{d != c} e^(z_d - z_c)) when z_c is the max
    (the tiny losses of confident predictions keep their relative accuracy)."""
    mp = mpmath_module()
    m = max(z)
    e = [mp.exp(exact_sub(v, m)) for v in z]
    log_s = mp.log(mp.fsum(e))
    out = []
    for c, v in enumerate(z):
        if v == m:
            out.append(mp.log1p(mp.fsum(e[d] for d in range(len(z)) if d != c)))
        else:
            out.append(exact_sub(m, v) + log_s)
    return out, e
