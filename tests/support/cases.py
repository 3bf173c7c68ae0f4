"""Test cases of the losses, made from their records (``losses.py``) and the registry.

For every loss of ``fastloss._registry.LOSSES`` its ``LossReference.cases`` says

* how to make valid inputs for a shape, dtype and seed (probabilities for
  ``binary_cross_entropy``, labels +-1 for the hinges, class indices with ignored entries
  or class probabilities for ``cross_entropy`` ...), kept away from the kinks of the loss so
  that finite differences and autograd agree with the analytic gradient;
* which parameter combinations to test (every parameter, every form of weight);
* which shapes to test (0-d, 1-D, 2-D for elementwise losses; ``(N, C)``, ``(C,)``,
  ``(N, C, d1, d2)`` for class losses).

Here: the cases themselves (``Case``, ``cases_of`` ...), and every documented error
(``error_cases``), shared by ``test_errors`` and ``test_fused``; the invalid values of every
parameter are derived from its domain in the registry (``invalid_values``).

``test_cases.py`` checks that the cases cover every row, parameter and weight form of the
registry; ``test_loss_references.py`` that every registry loss has a complete record.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Callable

import numpy as np

from fastloss._registry import BY_NAME, LOSSES, Interval, OneOf
from loss_inputs import (CLASS_SHAPES, CLASS_WEIGHT, ELEMENTWISE_SHAPES, KINK_GAP, WEIGHT_FORMS,  # noqa: F401
                         LossCases, class_axis, index_shape)
from losses import REFERENCES, referenced_losses

DTYPES = (np.float32, np.float64)


class _CasesView(Mapping):
    """``CASES[name]``: the ``LossCases`` of a loss's record (a clear error when missing)."""

    def __getitem__(self, name):
        return REFERENCES[name].cases

    def __iter__(self):
        return iter(REFERENCES)

    def __len__(self):
        return len(REFERENCES)


CASES: Mapping[str, LossCases] = _CasesView()


# --------------------------------------------------------------------------- invalid parameters
# Derived from each parameter's domain in the registry: values just outside every bound (and
# the open bound itself), the infinities outside the domain, NaN; for a set of integers the
# integers around it. Wrong types: per the parameter's type.

def invalid_values(param) -> tuple:
    """Values ``param`` must refuse with ValueError (each outside ``param.domain``; none for
    a bool parameter: both bools are valid, anything else is a TypeError)."""
    d = param.domain
    if param.type is bool:
        return ()
    if isinstance(d, OneOf):
        lo, hi = min(d.values), max(d.values)
        if all(float(v).is_integer() for v in d.values):
            out = [v for v in range(int(lo) - 2, int(hi) + 2) if v not in d.values]
        else:
            out = [lo - 1, hi + 1]
    else:
        assert isinstance(d, Interval), d
        out = [math.nan]
        if d.low is not None:
            if d.closed in ("neither", "right"):
                out.append(float(d.low))
            out += [d.low - 0.1, d.low - 0.5, d.low - 1.0, -math.inf]
        if d.high is not None:
            if d.closed in ("neither", "left"):
                out.append(float(d.high))
            out += [d.high + 0.1, d.high + 0.5, d.high + 1.0, math.inf]
        if d.finite:
            out += [math.inf, -math.inf]
    unique = []
    for v in out:
        if not any(v == u or (v != v and u != u) for u in unique):
            unique.append(v)
    return tuple(unique)


WRONG_TYPES: dict[type, tuple] = {float: ("1.0", "0.1", None, 1j), int: (1.5, "1", None),
                                  bool: (1, 0, 1.0, np.int64(1), "True", None)}


def wrong_type_values(param) -> tuple:
    """Values ``param`` must refuse with TypeError."""
    return WRONG_TYPES[param.type]


# Invalid values of every scalar parameter (ValueError) and values of a wrong type (TypeError),
# by (loss, parameter): parameters of one name may differ in domain (huber_loss's delta may be
# inf, pseudo_huber_loss's is finite).
INVALID_PARAM_VALUES: dict[tuple[str, str], tuple] = {
    (spec.name, p.name): invalid_values(p) for spec in LOSSES for p in spec.params}
WRONG_TYPE_PARAM_VALUES: dict[tuple[str, str], tuple] = {
    (spec.name, p.name): wrong_type_values(p) for spec in LOSSES for p in spec.params}


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
        x, t = REFERENCES[self.loss].cases.make(rng, self.shape, params, self.form)
        kwargs = {}
        for name, value in self.params:
            if name in ("weight", "pos_weight"):
                kwargs[name] = make_weight(rng, value, self.shape, dtype, positive=name == "pos_weight")
            elif name == "quantile" and isinstance(value, str):  # an array of quantiles, by form
                kwargs[name] = np.asarray(rng.uniform(0.05, 0.95, WEIGHT_FORMS[value](self.shape))).astype(dtype)
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
    return [case for spec in referenced_losses() for case in cases_of(spec.name)]


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
    for spec in referenced_losses():
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
    for spec in referenced_losses():
        out.append(large_case(spec.name))
        out.append(large_case(spec.name, weighted=False))
        for form in CASES[spec.name].forms[1:]:
            out.append(large_case(spec.name, form))
    # class losses with extra dimensions: (N, C, d) of 200_000 elements
    for spec in referenced_losses():
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
        for bad in invalid_values(p):
            add(f"{p.name}={bad!r}", ValueError, [p.name], _replace(p.name, bad))
        for bad in wrong_type_values(p):
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

