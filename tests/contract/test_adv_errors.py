"""Error types and messages of the scalar arguments (SPEC11 item 6), the same on the fast
and the general path of every loss and its ``_grad`` twin, on both backends:

* integers out of range for ``ignore_index`` (2**70, -2**70, 2**63, np.uint64(2**64 - 1))
  and for ``delta``, ``beta``, ``margin``, ``label_smoothing``, ``p`` (10**400, 2**1024,
  Fraction(10**400)): ValueError naming the argument, never OverflowError;
* ``reduction``: np.str_ works exactly as str; a str subclass whose ``__eq__`` raises or
  says everything is equal, and every non-str value, are a ValueError listing the three
  choices (never a silent "mean");
* bools for numeric parameters: TypeError naming the argument; NaN/inf parameters:
  ValueError where outside the domain (inf delta and beta are in it: checked against the
  reference);
* ``n_threads``: NumPy integers accepted (same bits), bool / float / str a TypeError,
  0 and negatives a ValueError, absurdly large values clamped or refused, never crashing.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from adv_data_support import (BY_NAME, CLASS_NAMES, FLOATS, NAMES, PATHS, REDUCTIONS, all_results,
                                          assert_matches, call, reference_results, valid_call)
from helpers import assert_bitwise

SENTINEL = -7.25


def _refused(api, name, x, t, kw, exc, mentions, reduction="mean"):
    """Both functions raise ``exc`` mentioning every string of ``mentions``; out untouched."""
    out = np.full(np.shape(x), SENTINEL, np.float32 if np.asarray(x).dtype == np.float32 else np.float64)
    for grad in (False, True):
        with pytest.raises(exc) as info:
            call(api, name, grad, x, t, kw, reduction, **({"out": out} if grad else {}))
        message = str(info.value)
        for m in mentions:
            assert m in message, f"{m!r} not in {message!r}"
    assert (out == SENTINEL).all(), "out written by a refused call"


# --------------------------------------------------------------------------- huge integers


HUGE_IGNORE = [2**70, -(2**70), 2**63, -(2**63) - 1, np.uint64(2**64 - 1), 10**400]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", [n for n in CLASS_NAMES if BY_NAME[n].ignore_index])
def test_huge_ignore_index_is_a_value_error(api, name, path):
    """ignore_index outside int64: ValueError naming ignore_index (not OverflowError), also
    when no target holds an ignored value."""
    for dtype in FLOATS:
        x, t, kw = valid_call(name, path, dtype, form="indices")
        for bad in HUGE_IGNORE:
            _refused(api, name, x, t, {**kw, "ignore_index": bad}, ValueError, ["ignore_index"])


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", [n for n in CLASS_NAMES if BY_NAME[n].ignore_index])
def test_extreme_valid_ignore_index(api, name, path):
    """ignore_index at the ends of int64 (and as NumPy integers): accepted, the results of
    any ignore_index no target holds."""
    for dtype in FLOATS:
        x, t, kw = valid_call(name, path, dtype, form="indices")
        expected = all_results(api, name, x, t, {**kw, "ignore_index": -100})
        for value in (2**63 - 1, -(2**63), np.int64(2**63 - 1), np.int8(-100), np.uint64(2**63 - 1)):
            got = all_results(api, name, x, t, {**kw, "ignore_index": value})
            for key in expected:
                assert_bitwise(got[key], expected[key], f"ignore_index={value!r}: {key}")


def _float_params():
    """The numeric (float and int) parameters."""
    out = []
    for name in NAMES:
        for p in BY_NAME[name].params:
            if p.type is not bool:
                out.append(pytest.param(name, p.name, id=f"{name}-{p.name}"))
    return out


def _bool_params():
    return [pytest.param(name, p.name, id=f"{name}-{p.name}") for name in NAMES
            for p in BY_NAME[name].params if p.type is bool]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name,param", _bool_params())
def test_bool_parameters_take_bools_only(api, name, param, path):
    """A flag (poisson_nll_loss's log_input, full; kl_div's log_target) takes Python and
    NumPy bools, with the same results; anything else is a TypeError naming it, 1 and 0
    included (as ints are refused where a float is wanted)."""
    for dtype in FLOATS:
        x, t, kw = valid_call(name, path, dtype)
        for flag in (False, True):
            expected = all_results(api, name, x, t, {**kw, param: flag})
            for same in (np.bool_(flag), bool(np.bool_(flag))):
                got = all_results(api, name, x, t, {**kw, param: same})
                for key in expected:
                    assert_bitwise(got[key], expected[key], f"{param}={same!r}: {key}")
        for bad in (1, 0, 1.0, 0.0, np.int64(1), np.float64(0.0), "True", None, [True], np.array(True),
                    math.nan):
            _refused(api, name, x, t, {**kw, param: bad}, TypeError, [param])


HUGE_NUMBERS = [10**400, -(10**400), 2**1024, Fraction(10**400), Fraction(-(10**400), 3)]
HUGE_INTS = [10**400, -(10**400), 2**1024, 2**70, np.uint64(2**64 - 1)]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name,param", _float_params())
def test_huge_numeric_parameters_are_value_errors(api, name, param, path):
    """delta, beta, margin, label_smoothing, p beyond the float range: ValueError naming the
    parameter (never OverflowError)."""
    for dtype in FLOATS:
        x, t, kw = valid_call(name, path, dtype)
        integer = next(q for q in BY_NAME[name].params if q.name == param).type is int
        for bad in HUGE_INTS if integer else HUGE_NUMBERS:
            _refused(api, name, x, t, {**kw, param: bad}, ValueError, [param])


@pytest.mark.parametrize("name,param", _float_params())
def test_bools_for_numeric_parameters_are_type_errors(api, name, param):
    x, t, kw = valid_call(name, "fast", np.float64)
    for bad in (True, False, np.bool_(True), np.bool_(False)):
        _refused(api, name, x, t, {**kw, param: bad}, TypeError, [param])


@pytest.mark.parametrize("name", [n for n in CLASS_NAMES if BY_NAME[n].ignore_index])
def test_bools_and_floats_for_ignore_index_are_type_errors(api, name):
    for path in PATHS:
        x, t, kw = valid_call(name, path, np.float64)
        for bad in (True, np.bool_(False), -100.0, np.float64(-100), math.nan, "-100"):
            _refused(api, name, x, t, {**kw, "ignore_index": bad}, TypeError, ["ignore_index"])


NAN_INF = [math.nan, math.inf, -math.inf, np.float64(math.nan), np.float32(math.inf), np.float64(-math.inf)]


@pytest.mark.parametrize("name,param", _float_params())
def test_nan_and_inf_parameters(api, name, param):
    """NaN and +-inf: a ValueError naming the parameter where outside its domain (p: a
    TypeError, it is an integer); inside (delta = +inf, beta = +inf) the reference's
    values."""
    spec = BY_NAME[name]
    p = next(q for q in spec.params if q.name == param)
    for dtype in FLOATS:
        x, t, kw = valid_call(name, "fast", dtype)
        for value in NAN_INF:
            kwv = {**kw, param: value}
            if p.type is int:
                _refused(api, name, x, t, kwv, TypeError, [param])
            elif p.valid(float(value)):
                for reduction in REDUCTIONS:
                    loss, grad = call(api, name, True, x, t, kwv, reduction)
                    ref_loss, ref_grad = reference_results(name, x, t, {**kw, param: float(value)}, reduction)
                    assert_matches(loss, grad, ref_loss, ref_grad, dtype, what=f"{param}={value!r} ({reduction})")
            else:
                _refused(api, name, x, t, kwv, ValueError, [param])


# --------------------------------------------------------------------------- reduction


class RaisingEq(str):
    def __eq__(self, other):
        raise RuntimeError("comparison refused")

    __hash__ = str.__hash__


class EqualsEverything(str):
    def __eq__(self, other):
        return True

    def __ne__(self, other):
        return False

    __hash__ = str.__hash__


class PlainStrSub(str):
    pass


class NotAStr:
    def __eq__(self, other):
        raise RuntimeError("comparison refused")

    __hash__ = object.__hash__


class EqualsMean:
    def __eq__(self, other):
        return other == "mean"

    __hash__ = object.__hash__


BAD_REDUCTIONS = [
    ("str-subclass-eq-raises-junk", lambda: RaisingEq("junk")),
    ("str-subclass-equals-everything", lambda: EqualsEverything("junk")),
    ("non-str-eq-raises", NotAStr),
    ("non-str-equal-to-mean", EqualsMean),
    ("None", lambda: None),
    ("int", lambda: 1),
    ("bytes", lambda: b"mean"),
    ("np.bytes_", lambda: np.bytes_(b"mean")),
    ("list", lambda: ["mean"]),
    ("0-d-array", lambda: np.array("mean")),
    ("upper", lambda: "MEAN"),
    ("np.str_-junk", lambda: np.str_("avg")),
]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("bad", [pytest.param(f, id=i) for i, f in BAD_REDUCTIONS])
@pytest.mark.parametrize("name", NAMES)
def test_bad_reductions_list_the_choices(api, name, bad, path):
    """A ValueError listing 'mean', 'sum' and 'none' (never a silent "mean"), for NAME and
    NAME_grad, nothing written."""
    x, t, kw = valid_call(name, path, np.float64)
    _refused(api, name, x, t, kw, ValueError, ["reduction", "'mean'", "'sum'", "'none'"], reduction=bad())


@pytest.mark.parametrize("name", NAMES)
def test_np_str_and_str_subclass_reductions_work_as_str(api, name):
    """reduction=np.str_(r) and any str subclass: bitwise reduction=r, on both paths, both
    dtypes, NAME and NAME_grad. A str subclass is read by its characters: its __eq__ is never
    called, so one that raises works as its text does (and one equal to everything is still
    "junk", a ValueError: test_bad_reductions_list_the_choices)."""
    for dtype in FLOATS:
        for path in PATHS:
            x, t, kw = valid_call(name, path, dtype)
            for reduction in REDUCTIONS:
                expected = (call(api, name, False, x, t, kw, reduction), call(api, name, True, x, t, kw, reduction))
                for form in (np.str_(reduction), PlainStrSub(reduction), RaisingEq(reduction)):
                    got = (call(api, name, False, x, t, kw, form), call(api, name, True, x, t, kw, form))
                    assert_bitwise(got[0], expected[0], f"{type(form).__name__}({reduction!r}) {path}")
                    assert_bitwise(got[1][0], expected[1][0], f"{type(form).__name__}({reduction!r}) {path}")
                    assert_bitwise(got[1][1], expected[1][1], f"{type(form).__name__}({reduction!r}) {path}")


# --------------------------------------------------------------------------- n_threads


@pytest.mark.parametrize("name", NAMES)
def test_n_threads_values(api, name):
    """NumPy integers accepted (same bits as the int); bool, float, str, None-like objects a
    TypeError; 0 and negatives a ValueError; all naming n_threads; 2**70: clamped (same
    bits) or a ValueError naming n_threads, never OverflowError or a crash."""
    for path in PATHS:
        x, t, kw = valid_call(name, path, np.float64)
        expected = all_results(api, name, x, t, {**kw, "n_threads": 2})
        for good in (np.int64(2), np.int32(2), np.uint8(2), np.intp(2)):
            got = all_results(api, name, x, t, {**kw, "n_threads": good})
            for key in expected:
                assert_bitwise(got[key], expected[key], f"n_threads={good!r}: {key}")
        for bad in (True, False, np.bool_(True), 2.0, np.float64(2.0), "2", 2 + 0j, Fraction(2)):
            _refused(api, name, x, t, {**kw, "n_threads": bad}, TypeError, ["n_threads"])
        for bad in (0, -1, -(2**70), np.int64(0), np.int64(-3)):
            _refused(api, name, x, t, {**kw, "n_threads": bad}, ValueError, ["n_threads"])
        for huge in (2**70, np.uint64(2**64 - 1), 2**31, 2**31 - 1):
            try:
                got = all_results(api, name, x, t, {**kw, "n_threads": huge})
            except ValueError as exc:
                assert "n_threads" in str(exc), str(exc)
            else:
                for key in expected:
                    assert_bitwise(got[key], expected[key], f"n_threads={huge!r}: {key}")
