"""Building blocks of the per-loss inputs in ``losses.py``: random generators for the test
cases (``LossCases``), and adversarial input builders for the accuracy tests. Nothing here
knows a loss by name: which loss uses which builder is said in ``losses.py``."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)

# Elementwise weight forms: how a weight of each form is shaped for an input shape.
WEIGHT_FORMS: dict[str, Callable[[tuple], tuple | None]] = {
    "full": lambda shape: shape,
    "last": lambda shape: shape[-1:] if len(shape) >= 1 else None,
    "scalar": lambda shape: (),
    "column": lambda shape: shape[:-1] + (1,) if len(shape) >= 2 else None,
}
CLASS_WEIGHT = "class"

# Distance kept between a generated residual / hinge argument and any kink of the loss.
KINK_GAP = 0.05


# =========================================================================== test cases


@dataclass(frozen=True)
class LossCases:
    """How to test one loss."""

    make: Callable  # (rng, shape, params, form) -> (input float64, target)
    shapes: tuple[tuple, ...]
    params: tuple[dict, ...]  # parameter combinations; weight forms by name
    # The defaults below are per kind, not per loss: ``forms`` is the elementwise kind's (every
    # class loss sets its own, test_every_table_covers_every_loss checks it); ``large_shape``
    # suits either kind; ``to_int`` and ``to_bool`` suit inputs over the reals (residuals,
    # logits, scores) and a loss with a restricted input (BCE's probabilities) sets its own.
    forms: tuple[str, ...] = ("values",)  # target forms
    # parameter combinations for target forms other than the first one
    form_params: dict = field(default_factory=dict)
    # shape of a large input for the thread-determinism tests (>= 200_000 elements)
    large_shape: tuple = (400, 500)
    # how to turn generated float64 input values into an int / bool array of valid values
    to_int: Callable = np.rint
    to_bool: Callable = lambda x: x > 0


ELEMENTWISE_SHAPES = ((29,), (6, 7), ())
CLASS_SHAPES = ((9, 5), (5,), (3, 4, 2, 3))
# every elementwise weight form once
WEIGHTS = ({"weight": "full"}, {"weight": "last"}, {"weight": "scalar"}, {"weight": "column"})


def class_axis(shape: tuple) -> int:
    return 0 if len(shape) == 1 else 1


def index_shape(shape: tuple) -> tuple:
    """The shape of the class-index target for a class-loss input shape."""
    return () if len(shape) == 1 else (shape[0],) + tuple(shape[2:])


def signs(rng, shape):
    return np.where(np.asarray(rng.random(shape)) < 0.5, -1.0, 1.0)


def away_from(rng, shape, low, high, kinks):
    """Random values with |v| in [low, high], random sign, |v| at least KINK_GAP from every kink."""
    v = np.asarray(rng.uniform(low, high, shape))
    for _ in range(1000):
        bad = np.zeros(v.shape, bool)
        for k in kinks:
            bad |= np.abs(v - k) < KINK_GAP
        if not bad.any():
            break
        v[bad] = rng.uniform(low, high, int(bad.sum()))
    else:  # pragma: no cover - the kinks would have to cover [low, high]
        raise RuntimeError("could not draw values away from the kinks")
    return v * signs(rng, shape)


def soft_labels(rng, shape):
    """Targets in [0, 1]: a mixture of exact 0, exact 1 and values in between."""
    kind = np.asarray(rng.integers(0, 3, shape))
    return np.where(kind == 0, 0.0, np.where(kind == 1, 1.0, np.asarray(rng.uniform(0.0, 1.0, shape))))


def class_targets(rng, shape, params, form, ignore_default):
    """Class indices in [0, C), with about 30% set to ignore_index for form 'indices+ignored'.

    At least one sample is kept; with two samples or more at least one is ignored. Kept
    samples never hold the ignore value (it may be a valid class)."""
    n_classes = shape[class_axis(shape)]
    ishape = index_shape(shape)
    ignore = params.get("ignore_index", ignore_default)
    choices = [c for c in range(n_classes) if c != ignore]
    t = np.asarray(rng.choice(choices, ishape)).astype(np.int64)
    if form == "indices+ignored":
        flat = t.reshape(-1)
        drop = np.asarray(rng.random(flat.shape)) < 0.3
        if flat.size >= 2:
            drop[0], drop[-1] = False, True
        else:
            drop[:] = False
        flat[drop] = ignore
    return t


def class_probabilities(rng, shape):
    z = np.asarray(rng.normal(0.0, 1.0, shape))
    e = np.exp(z - z.max(axis=class_axis(shape), keepdims=True))
    return e / e.sum(axis=class_axis(shape), keepdims=True)


# =========================================================================== accuracy inputs
# Builders of adversarial inputs for tests/numerics/test_accuracy.py: each accuracy variant
# of a loss is (id, builder(dtype) -> (x, t, kwargs)). Parameters are representable in
# float32, so the exact formula and fastloss see the same numbers.


def farray(dtype, *values):
    return np.array(values, dtype)


def big_values(dtype):
    """Values near overflow for the dtype: the largest finite, half of it, and the largest
    residual whose square is finite (and the next one, whose square overflows)."""
    info = np.finfo(dtype)
    root = np.sqrt(info.max.astype(np.float64))
    return info.max, info.max / 2, dtype.type(root * 0.999), dtype.type(root * 1.001)


def residual_pairs(dtype, kinks=()):
    """(x, y) for the residual losses: random, near-equal, huge, near-overflow, subnormal,
    signed zeros, mixed magnitudes, and residuals at and one ULP around every kink."""
    rng = np.random.default_rng(1)
    info = np.finfo(dtype)
    sub, tiny = info.smallest_subnormal, info.tiny
    xs, ys = list(rng.normal(0, 3, 48)), list(rng.normal(0, 3, 48))
    for v in (1.0, 1e-3, 1e3, 7.5e5, float(tiny) * 4):
        v = dtype.type(v)
        for k in (1, 2, 7):  # y a few ULP from x: exact, cancelling residuals
            xs.append(v)
            ys.append(v + k * np.spacing(v))
    maxv, half, root_lo, root_hi = big_values(dtype)
    for x, y in ((maxv, 0), (-maxv, 0), (half, -half), (maxv, -maxv), (root_lo, 0), (root_hi, 0),
                 (-root_lo, 0), (root_lo / 2, -root_lo / 2), (1e30 if dtype == F32 else 1e300, 1e-30),
                 (1e10, -1e10), (sub, 0), (0, sub), (3 * sub, -2 * sub), (tiny, tiny / 2), (sub, -sub),
                 (tiny * 1e5, 0), (0.0, 0.0), (-0.0, 0.0), (1e-20, 0), (5.0, -0.0)):
        xs.append(x)
        ys.append(y)
    for k in kinks:  # r = k exactly, and one ULP either side, on both signs
        k = dtype.type(k)
        for r in (k, np.nextafter(k, dtype.type(0)), np.nextafter(k, dtype.type(np.inf))):
            for sign in (1, -1):
                xs.append(sign * r)
                ys.append(0.0)
                xs.append(dtype.type(2.5) + sign * r)  # the same residual, with rounding of x - y
                ys.append(2.5)
    return np.array(xs, dtype), np.array(ys, dtype)


def random_weights(x, dtype, seed=2):
    rng = np.random.default_rng(seed)
    return np.asarray(rng.uniform(0.25, 2.0, x.shape), dtype)


def finite_residual(x, y, dtype):
    """The pairs whose residual x - y is finite in the dtype (at x = max, y = -max it is not,
    in any implementation that forms x - y in the dtype; the Huber loss of that residual
    with delta < 1/2 is finite, so such pairs are left out of its inputs)."""
    with np.errstate(over="ignore"):
        keep = np.isfinite(x - y)
    return x[keep], y[keep]


def moderate(x, y, limit):
    """The pairs whose values stay below ``limit`` (weighted cases: w * r**2 must not
    overflow only in the product r**2, see the module notes of test_accuracy)."""
    keep = (np.abs(x.astype(np.float64)) < limit) & (np.abs(y.astype(np.float64)) < limit)
    return x[keep], y[keep]


def moderate_limit(dtype):
    """The ``moderate`` limit of the weighted accuracy variants."""
    return 1e15 if dtype == F32 else 1e150


def grid(xs, ys, dtype):
    x, y = np.meshgrid(np.array(xs, np.float64), np.array(ys, np.float64), indexing="ij")
    return x.reshape(-1).astype(dtype), y.reshape(-1).astype(dtype)


def signed(values):
    return tuple(values) + tuple(-v for v in values if v)


def hinge_pairs(dtype, margin):
    """Scores around the kink (margin - y*x = 0 exactly and one ULP away), huge and tiny."""
    m = dtype.type(margin)
    base = [m, np.nextafter(m, dtype.type(-np.inf)), np.nextafter(m, dtype.type(np.inf)), 0.0, 0.3,
            -2.0, 7.0, 1e-30, 1e4, 1e30, float(np.finfo(dtype).max), float(np.finfo(dtype).smallest_subnormal)]
    xs = signed(base) + tuple(np.random.default_rng(3).normal(0, 2, 24))
    return grid(xs, (-1.0, 1.0), dtype)


def class_rows(dtype):
    """(rows, C): logit rows that break softmax cross-entropy: dominant targets (tiny
    losses), huge logits, ties, near-ties, overflow of the exact loss, and random rows."""
    info = np.finfo(dtype)
    big = 1e30 if dtype == F32 else 1e300
    rows = [
        [0.0, -40.0, -40.0, -40.0], [0.0, -10.0, -12.0, -9.0], [20.0, 0.0, 0.0, 0.0], [0.0, -100.0, -3.0, -5.0],
        [1e4, 0.0, -1e4, 5.0], [1e4, 1e4 - 1, 1e4 - 2, -1e4], [-1e4, 1e4, 0.0, 0.0],
        [big, -big, 0.0, 1.0], [big, big, -big, 0.0], [-big, -big, -big, 0.0],
        [5.0, 5.0, 5.0, 5.0], [0.0, -1e-7, 1e-7, 0.0], [float(info.max), 0.0, -1.0, 1.0],
        [float(info.max), -float(info.max), 0.0, 0.0], [88.0, 89.0, -89.0, 0.0], [709.0, 710.0, -710.0, 0.0],
        [1e-30, -1e-30, 0.0, 2e-30],
    ]
    rng = np.random.default_rng(4)
    rows += (rng.normal(0, 3, (8, 4))).tolist()
    return np.array(rows, np.float64).astype(dtype)


def class_inputs(dtype, overflow_rows=True):
    """(input, target) with every row paired with every target class. ``overflow_rows=False``
    leaves out the rows holding the dtype's largest finite logit: with label smoothing or
    class probabilities the loss sums -log p_c over classes, and there a logit spread near
    the largest finite value overflows on the way to a finite exact result (or gives
    0 * inf = NaN for a zero target probability, as in PyTorch): a known limit."""
    rows = class_rows(dtype)
    if not overflow_rows:
        rows = rows[~(np.abs(rows) == np.finfo(dtype).max).any(axis=1)]
    n, c = rows.shape
    return np.repeat(rows, c, axis=0), np.tile(np.arange(c), n)


# class_inputs without the rows that overflow when -log p is summed over classes
summed_class_inputs = functools.partial(class_inputs, overflow_rows=False)


def margin_rows(dtype, margin):
    """Scores whose hinge arguments margin - x_y + x_c are 0 exactly, one ULP from 0, tiny
    against huge scores (margin - x_y first loses the margin), tiny against the margin
    (x_c - x_y first loses x_c), huge, random."""
    m = float(margin)
    big = 1e4 if dtype == F32 else 1e12
    rows = [
        [0.0, -m, 1.0, -5.0], [big + 0.5, big + 0.5 - m, big, big - 7.25], [big, big + 0.375 - m, big - m, -big],
        [1e30, 1e30, -1e30, 0.0], [1e-30, 0.0, -1e-30, 2e-30], [3.0, 3.0, 3.0, 3.0],
        [m, 1e-9, -1e-30, 1e-20],  # target at the margin, tiny others: x_c - x_y first loses x_c
        [float(np.finfo(dtype).max) / 4, 0.0, -1.0, 1.0],
    ]
    rng = np.random.default_rng(5)
    rows += rng.normal(0, 2, (8, 4)).tolist()
    rows = np.array(rows, np.float64).astype(dtype)
    # one ULP around the kink: x_c = x_y - margin (+- 1 ULP)
    kink = rows[:2].copy()
    kink[:, 2] = [np.nextafter(kink[0, 1], dtype.type(np.inf)), np.nextafter(kink[1, 1], dtype.type(-np.inf))]
    rows = np.concatenate([rows, kink])
    n, c = rows.shape
    return np.repeat(rows, c, axis=0), np.tile(np.arange(c), n)


def probability_targets(x, dtype):
    """Class probabilities per row: one-hot, soft, uniform and with exact zeros."""
    n, c = x.shape
    rng = np.random.default_rng(6)
    q = rng.dirichlet(np.ones(c), n)
    q[::4] = np.eye(c)[np.arange(0, n, 4) % c]
    q[1::4] = 1.0 / c
    q[2::4, 0] = 0.0
    return np.asarray(q / q.sum(axis=1, keepdims=True), dtype)


def with_weight(xy, dtype):
    x, y = xy
    return x, y, {"weight": random_weights(x, dtype)}


def with_pos_weight(xy, dtype, pw):
    x, y = xy
    return x, y, {"pos_weight": np.full(x.shape, pw, dtype)}


def class_weight(dtype, c=4):
    return np.array([0.5, 2.0, 1.25, 0.75][:c], dtype)


def ignored(xt, ignore):
    x, t = xt
    t = t.copy()
    t[::3] = ignore
    return x, t, {"ignore_index": ignore}


def with_probability_targets(x, dtype, kw):
    return x, probability_targets(x, dtype), kw


def spatial(xt):
    """(N, C, 2): the class axis strided in memory (the kernels' non-contiguous row path)."""
    x, t = xt
    half = len(x) // 2
    xs = np.stack([x[:half], x[half:2 * half]], axis=-1)
    ts = np.stack([t[:half], t[half:2 * half]], axis=-1)
    return xs, ts, {}
