"""The test-side table of the losses: one entry per registry loss.

For every loss of ``fastloss._registry.LOSSES`` this table says

* how to make valid inputs for a shape, dtype and seed (probabilities for
  ``binary_cross_entropy``, labels +-1 for the hinges, class indices with ignored entries
  or class probabilities for ``cross_entropy`` ...), kept away from the kinks of the loss so
  that finite differences and autograd agree with the analytic gradient;
* which parameter combinations to test (every parameter, every form of weight);
* which shapes to test (0-d, 1-D, 2-D for elementwise losses; ``(N, C)``, ``(C,)``,
  ``(N, C, d1, d2)`` for class losses);
* which invalid values of every parameter must be refused, and every documented error
  (``error_cases``), shared by ``test_errors`` and ``test_fused``.

``test_cases.py`` checks that this table covers every row, parameter and weight form of
the registry: a loss added to the registry without test support fails there.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from fastloss._registry import BY_NAME, LOSSES

DTYPES = (np.float32, np.float64)

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


# --------------------------------------------------------------------------- generators


def class_axis(shape: tuple) -> int:
    return 0 if len(shape) == 1 else 1


def index_shape(shape: tuple) -> tuple:
    """The shape of the class-index target for a class-loss input shape."""
    return () if len(shape) == 1 else (shape[0],) + tuple(shape[2:])


def _signs(rng, shape):
    return np.where(np.asarray(rng.random(shape)) < 0.5, -1.0, 1.0)


def _away_from(rng, shape, low, high, kinks):
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
    return v * _signs(rng, shape)


def _soft_labels(rng, shape):
    """Targets in [0, 1]: a mixture of exact 0, exact 1 and values in between."""
    kind = np.asarray(rng.integers(0, 3, shape))
    return np.where(kind == 0, 0.0, np.where(kind == 1, 1.0, np.asarray(rng.uniform(0.0, 1.0, shape))))


def _residual_loss(kink_param=None, default=1.0):
    """Input = target + r with r away from 0 and from the loss's kink (delta or beta)."""

    def make(rng, shape, params, form):
        kinks = [0.0]
        if kink_param is not None:
            kinks.append(float(params.get(kink_param, default)))
        t = np.asarray(rng.normal(0.0, 1.0, shape))
        return t + _away_from(rng, shape, KINK_GAP, 3.0, kinks), t

    return make


def _make_bce(rng, shape, params, form):
    # Probabilities away from 0 and 1: no clamp, and torch's log(1 - x) stays accurate.
    return np.asarray(rng.uniform(0.05, 0.95, shape)), _soft_labels(rng, shape)


def _make_bce_logits(rng, shape, params, form):
    # |x| <= 8: PyTorch's float64 formula (which cancels for tiny losses) stays accurate to
    # 1e-11 there; extreme logits are tested against mpmath in test_edge.
    return np.asarray(rng.uniform(-8.0, 8.0, shape)), _soft_labels(rng, shape)


def _make_hinge(rng, shape, params, form):
    # z = margin - y * x away from the kink z = 0.
    y = _signs(rng, shape)
    z = _away_from(rng, shape, KINK_GAP, 2.0, [0.0])
    return y * (float(params.get("margin", 1.0)) - z), y


def _class_targets(rng, shape, params, form, ignore_default):
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


def _probabilities(rng, shape):
    z = np.asarray(rng.normal(0.0, 1.0, shape))
    e = np.exp(z - z.max(axis=class_axis(shape), keepdims=True))
    return e / e.sum(axis=class_axis(shape), keepdims=True)


def _make_cross_entropy(rng, shape, params, form):
    x = np.asarray(rng.normal(0.0, 1.5, shape))
    if form == "probabilities":
        return x, _probabilities(rng, shape)
    return x, _class_targets(rng, shape, params, form, -100)


def _make_nll(rng, shape, params, form):
    z = np.asarray(rng.normal(0.0, 1.5, shape))
    ax = class_axis(shape)
    m = z.max(axis=ax, keepdims=True)
    logp = z - m - np.log(np.exp(z - m).sum(axis=ax, keepdims=True))
    return logp, _class_targets(rng, shape, params, form, -100)


def _make_multi_margin(rng, shape, params, form):
    # Scores with every hinge argument z_c = margin - x_y + x_c (c != y) away from 0.
    margin = float(params.get("margin", 1.0))
    t = _class_targets(rng, shape, params, form, None)
    x2 = np.atleast_2d(np.asarray(rng.normal(0.0, 1.0, shape)))
    t1 = np.atleast_1d(t)
    rows = np.arange(x2.shape[0])
    for _ in range(1000):
        z = margin - x2[rows, t1][:, None] + x2
        z[rows, t1] = 1.0  # the target class is not a hinge term
        bad = (np.abs(z) < KINK_GAP).any(axis=1)
        if not bad.any():
            break
        x2[bad] = rng.normal(0.0, 1.0, (int(bad.sum()), x2.shape[1]))
    else:  # pragma: no cover
        raise RuntimeError("could not draw scores away from the kinks")
    return x2.reshape(shape), t


# --------------------------------------------------------------------------- the table


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

_WEIGHTS = ({"weight": "full"}, {"weight": "last"}, {"weight": "scalar"}, {"weight": "column"})
_HINGE_PARAMS = (
    {}, {"margin": 0.5}, {"margin": 2.0, "weight": "full"}, {"weight": "last"},
    {"weight": "scalar", "margin": -0.5}, {"margin": 0.0, "weight": "column"},
)

CASES: dict[str, LossCases] = {
    "mse_loss": LossCases(_residual_loss(), ELEMENTWISE_SHAPES, ({},) + _WEIGHTS),
    "l1_loss": LossCases(_residual_loss(), ELEMENTWISE_SHAPES, ({},) + _WEIGHTS),
    "huber_loss": LossCases(
        _residual_loss("delta"), ELEMENTWISE_SHAPES,
        ({}, {"delta": 0.5}, {"delta": 2.5, "weight": "full"}, {"weight": "last"},
         {"weight": "scalar", "delta": 1.5}, {"weight": "column", "delta": 0.3}),
    ),
    "smooth_l1_loss": LossCases(
        _residual_loss("beta"), ELEMENTWISE_SHAPES,
        ({}, {"beta": 0.5}, {"beta": 2.0}, {"beta": 0.0}),
    ),
    "binary_cross_entropy": LossCases(
        _make_bce, ELEMENTWISE_SHAPES, ({},) + _WEIGHTS,
        to_int=lambda x: np.rint(x), to_bool=lambda x: x > 0.5,
    ),
    "binary_cross_entropy_with_logits": LossCases(
        _make_bce_logits, ELEMENTWISE_SHAPES,
        ({},) + _WEIGHTS + (
            {"pos_weight": "last"}, {"pos_weight": "scalar"},
            {"pos_weight": "full", "weight": "scalar"}, {"pos_weight": "last", "weight": "column"},
        ),
    ),
    "cross_entropy": LossCases(
        _make_cross_entropy, CLASS_SHAPES,
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
    "nll_loss": LossCases(
        _make_nll, CLASS_SHAPES,
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
    "multi_margin_loss": LossCases(
        _make_multi_margin, ((9, 5), (5,)),
        ({}, {"p": 2}, {"margin": 0.5}, {"p": 2, "margin": 2.0, "weight": CLASS_WEIGHT},
         {"weight": CLASS_WEIGHT}, {"p": 1, "margin": -0.25}),
        forms=("indices",),
        large_shape=(5000, 40),
    ),
    "hinge_loss": LossCases(
        _make_hinge, ELEMENTWISE_SHAPES, _HINGE_PARAMS,
        to_int=lambda x: np.rint(x), to_bool=lambda x: x > 0,
    ),
    "squared_hinge_loss": LossCases(
        _make_hinge, ELEMENTWISE_SHAPES, _HINGE_PARAMS,
        to_int=lambda x: np.rint(x), to_bool=lambda x: x > 0,
    ),
}

# Invalid values of every scalar parameter (ValueError) and values of a wrong type (TypeError).
INVALID_PARAM_VALUES: dict[str, tuple] = {
    "delta": (0.0, -1.0, math.nan, -math.inf),
    "beta": (-0.5, -math.inf, math.nan),
    "label_smoothing": (-0.1, 1.5, math.nan, math.inf),
    "p": (0, 3, -1),
    "margin": (math.inf, -math.inf, math.nan),
}
WRONG_TYPE_PARAM_VALUES: dict[str, tuple] = {
    "delta": ("1.0", None, 1j),
    "beta": ("1.0", None, 1j),
    "label_smoothing": ("0.1", None, 1j),
    "p": (1.5, "1", None),
    "margin": ("1.0", None, 1j),
}


# --------------------------------------------------------------------------- cases


def _stable_seed(text: str) -> int:
    return zlib.crc32(text.encode())


@dataclass(frozen=True)
class Case:
    """One call of one loss: shape, target form and parameters (weights by form name)."""

    loss: str
    shape: tuple
    form: str
    params: tuple  # sorted (name, value) pairs

    @property
    def spec(self):
        return BY_NAME[self.loss]

    @property
    def id(self) -> str:
        shape = "x".join(map(str, self.shape)) if self.shape else "0d"
        parts = [self.loss, shape]
        if self.form not in ("values", "indices"):
            parts.append(self.form)
        parts += [f"{k}={v}" for k, v in self.params]
        return "-".join(parts)

    def __str__(self):
        return self.id

    def generate(self, dtype, seed: int = 0):
        """``(input, target, kwargs)``: float input of ``dtype``, target, materialised params."""
        rng = np.random.default_rng(_stable_seed(self.id) + seed)
        params = dict(self.params)
        x, t = CASES[self.loss].make(rng, self.shape, params, self.form)
        kwargs = {}
        for name, value in self.params:
            if name in ("weight", "pos_weight"):
                kwargs[name] = make_weight(rng, value, self.shape, dtype, positive=name == "pos_weight")
            else:
                kwargs[name] = value
        x = np.asarray(x, dtype=dtype)
        if np.asarray(t).dtype.kind == "f":
            t = np.asarray(t, dtype=dtype)
        return x, t, kwargs


def make_weight(rng, form, shape, dtype, positive=False):
    if form == CLASS_WEIGHT:
        wshape = (shape[class_axis(shape)],)
    else:
        wshape = WEIGHT_FORMS[form](shape)
    w = np.asarray(rng.uniform(0.25, 2.0, wshape)).astype(dtype)
    if form == "full" and w.size > 2 and not positive:
        w.reshape(-1)[1] = 0  # a zero weight among the others
    return w


def _applicable(params: dict, shape: tuple) -> bool:
    for name in ("weight", "pos_weight"):
        form = params.get(name)
        if form is not None and form != CLASS_WEIGHT and WEIGHT_FORMS[form](shape) is None:
            return False
    return True


def cases_of(loss: str):
    entry = CASES[loss]
    out = []
    for form in entry.forms:
        param_sets = entry.params if form == entry.forms[0] else entry.form_params[form]
        for shape in entry.shapes:
            for params in param_sets:
                if _applicable(params, shape):
                    out.append(Case(loss, shape, form, tuple(sorted(params.items()))))
    return out


def all_cases():
    return [case for spec in LOSSES for case in cases_of(spec.name)]


def one_case_per_param_set():
    """Every parameter combination and target form once, on the richest shape."""
    seen, out = set(), []
    for case in all_cases():
        key = (case.loss, case.form, case.params)
        if key not in seen and len(case.shape) == max(len(s) for s in CASES[case.loss].shapes):
            seen.add(key)
            out.append(case)
    return out


def representative_cases():
    """A few cases per loss: the plain one, one per other target form, the first with a
    weight, with a pos_weight and with a non-default scalar parameter."""
    out = {}
    rich = one_case_per_param_set()
    for spec in LOSSES:
        mine = [c for c in rich if c.loss == spec.name]
        scalar_names = {p.name for p in spec.params} | {"ignore_index"}
        wanted = [lambda c: True]
        wanted += [lambda c, f=f: c.form == f for f in CASES[spec.name].forms[1:]]
        wanted += [lambda c: "weight" in dict(c.params), lambda c: "pos_weight" in dict(c.params),
                   lambda c: bool(scalar_names & set(dict(c.params)))]
        for pred in wanted:
            found = [c for c in mine if pred(c)]
            if found:
                out.setdefault(found[0].id, found[0])
    return list(out.values())


def large_case(loss: str, form: str | None = None, weighted: bool = True) -> Case:
    """A case of >= 200_000 elements for the thread-determinism tests."""
    spec = BY_NAME[loss]
    entry = CASES[loss]
    form = form or entry.forms[-1 if spec.ignore_index and not spec.probability_target else 0]
    params = {}
    if weighted and spec.weight:
        params["weight"] = CLASS_WEIGHT if spec.weight == "class" else "last"
    if spec.pos_weight:
        params["pos_weight"] = "full"
    if spec.probability_target and form != "probabilities":
        params["label_smoothing"] = 0.1
    return Case(loss, entry.large_shape, form, tuple(sorted(params.items())))


def large_cases():
    out = []
    for spec in LOSSES:
        out.append(large_case(spec.name))
        out.append(large_case(spec.name, weighted=False))
        for form in CASES[spec.name].forms[1:]:
            out.append(large_case(spec.name, form))
    # class losses with extra dimensions: (N, C, d) of 200_000 elements
    for spec in LOSSES:
        if spec.kind == "classes" and spec.max_input_dims is None:
            out.append(Case(spec.name, (100, 10, 200), CASES[spec.name].forms[-1] if not spec.probability_target
                            else "indices+ignored", ()))
    unique = {c.id: c for c in out}
    return list(unique.values())


# --------------------------------------------------------------------------- errors


@dataclass(frozen=True)
class ErrorCase:
    """A call that must raise ``exc`` with every string of ``mentions`` in its message."""

    loss: str
    what: str
    exc: type
    mentions: tuple
    build: Callable  # (x, t, kwargs) -> (x, t, kwargs) of the bad call

    @property
    def id(self):
        return f"{self.loss}-{self.what}"

    def __str__(self):
        return self.id


def error_base(loss: str, dtype=np.float64):
    """A valid call (input, target, kwargs) to break: a 2-D case with every array parameter."""
    spec = BY_NAME[loss]
    params = {}
    if spec.weight:
        params["weight"] = CLASS_WEIGHT if spec.weight == "class" else "full"
    if spec.pos_weight:
        params["pos_weight"] = "full"
    shape = (4, 5)
    form = CASES[loss].forms[0]
    return Case(loss, shape, form, tuple(sorted(params.items()))).generate(dtype)


def _replace(key, value):
    def build(x, t, kw):
        if key == "input":
            return value(x) if callable(value) else value, t, kw
        if key == "target":
            return x, value(t) if callable(value) else value, kw
        return x, t, {**kw, key: value(kw.get(key)) if callable(value) else value}
    return build


def _set_first(value):
    def change(a):
        a = np.array(a)
        a.reshape(-1)[0] = value
        return a
    return change


def error_cases(loss: str):
    """Every documented error of API.md that applies to ``loss``."""
    spec = BY_NAME[loss]
    out = []

    def add(what, exc, mentions, build):
        out.append(ErrorCase(loss, what, exc, tuple(mentions), build))

    # ----- types
    for arg in ("input", "target"):
        add(f"{arg}-complex", TypeError, [arg, "complex"], _replace(arg, lambda a: np.asarray(a) + 0j))
        add(f"{arg}-object", TypeError, [arg, "object"], _replace(arg, lambda a: np.asarray(a).astype(object)))
        add(f"{arg}-str", TypeError, [arg], _replace(arg, lambda a: np.asarray(a).astype(str)))
    for arg in ("weight", "pos_weight"):
        if (arg == "weight" and spec.weight) or (arg == "pos_weight" and spec.pos_weight):
            add(f"{arg}-complex", TypeError, [arg, "complex"], _replace(arg, lambda w: np.asarray(w) + 0j))
            add(f"{arg}-str", TypeError, [arg], _replace(arg, lambda w: np.asarray(w).astype(str)))
    for bad in (1.5, "2", True, 2.0):
        add(f"n_threads={bad!r}", TypeError, ["n_threads"], _replace("n_threads", bad))
    for bad in (0, -1, -8):
        add(f"n_threads={bad}", ValueError, ["n_threads", str(bad)], _replace("n_threads", bad))

    # ----- reduction
    for bad in ("avg", "MEAN", "", "elementwise_mean", None, 1):
        add(f"reduction={bad!r}", ValueError, ["reduction", "'mean'", "'sum'", "'none'", repr(bad)],
            _replace("reduction", bad))

    # ----- scalar parameters
    for p in spec.params:
        for bad in INVALID_PARAM_VALUES[p.name]:
            add(f"{p.name}={bad!r}", ValueError, [p.name], _replace(p.name, bad))
        for bad in WRONG_TYPE_PARAM_VALUES[p.name]:
            add(f"{p.name}={bad!r}", TypeError, [p.name], _replace(p.name, bad))

    # ----- shapes
    if spec.kind == "elementwise":
        for bad_shape in ((5, 4), (4, 1), (20,), (1, 4, 5), ()):
            add(f"target-shape{bad_shape}", ValueError, [str((4, 5)), str(bad_shape)],
                _replace("target", lambda t, s=bad_shape: np.resize(t, s)))
        if spec.weight:
            for bad_shape in ((4,), (5, 4), (2, 4, 5), (3, 1)):
                add(f"weight-shape{bad_shape}", ValueError, ["weight", str(bad_shape)],
                    _replace("weight", lambda w, s=bad_shape: np.ones(s, w.dtype)))
        if spec.pos_weight:
            for bad_shape in ((4,), (2, 4, 5)):
                add(f"pos_weight-shape{bad_shape}", ValueError, ["pos_weight", str(bad_shape)],
                    _replace("pos_weight", lambda w, s=bad_shape: np.ones(s, w.dtype)))
    else:
        for bad_shape in ((5,), (4, 1), (4, 5), (1, 4)):
            add(f"target-shape{bad_shape}", ValueError, ["target", str((4, 5)), str(bad_shape)],
                _replace("target", lambda t, s=bad_shape: np.zeros(s, np.int64)))
        add("input-0d", ValueError, ["input", "()"], _replace("input", lambda x: x[0, 0]))
        if spec.max_input_dims:
            add("input-3d", ValueError, ["input", str((4, 5, 2))],
                _replace("input", lambda x: np.stack([x, x], axis=-1)))
        add("target-float-indices", TypeError, ["target", "float"],
            _replace("target", lambda t: np.asarray(t, np.float64)))
        add("target-float32-indices", TypeError, ["target", "float32"],
            _replace("target", lambda t: np.asarray(t, np.float32)))
        add("target-nan-indices", TypeError, ["target", "float64"],
            _replace("target", lambda t: _set_first(math.nan)(np.asarray(t, np.float64))))
        for bad in (5, 7, -1, -100) if not spec.ignore_index else (5, 7, -1, -101):
            add(f"target-index={bad}", ValueError, ["target", str(bad)], _replace("target", _set_first(bad)))
        add("target-index-uint64-huge", ValueError, ["target", str(2**63 + 5)],
            _replace("target", lambda t: _set_first(2**63 + 5)(np.asarray(t, np.uint64))))
        if spec.ignore_index:
            for bad in (1.5, "1", True, None, 2.0):
                add(f"ignore_index={bad!r}", TypeError, ["ignore_index"], _replace("ignore_index", bad))
        if spec.weight == "class":
            for bad_shape in ((6,), (4,), (1, 5), ()):
                add(f"weight-shape{bad_shape}", ValueError, ["weight", str(bad_shape)],
                    _replace("weight", lambda w, s=bad_shape: np.ones(s, w.dtype)))

    # ----- value domains
    if spec.input_domain == "unit":
        for bad in (1.5, -0.25, math.nan, math.inf):
            add(f"input-value={bad!r}", ValueError, ["input", repr(bad)], _replace("input", _set_first(bad)))
    if spec.target_domain == "unit":
        for bad in (1.5, -0.25, math.nan):
            add(f"target-value={bad!r}", ValueError, ["target", repr(bad)], _replace("target", _set_first(bad)))
    if spec.target_domain == "sign":
        for bad in (0.0, 0.5, 2.0, -3.0, math.nan, math.inf):
            add(f"target-label={bad!r}", ValueError, ["target", repr(bad)], _replace("target", _set_first(bad)))
    return out


def all_error_cases():
    return [e for spec in LOSSES for e in error_cases(spec.name)]

