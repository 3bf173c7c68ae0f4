"""The one place in the tests that knows the losses one by one, tests/support/losses.py,
covers exactly the registry, with a complete record per loss.

A loss added to ``fastloss._registry`` without a record fails here by name (the other
modules leave it out of what they derive from the records, and run on); a record without a
field it must give fails here naming the loss and the field."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fastloss._registry import BY_NAME, LOSSES, Loss
from loss_inputs import F32, F64, LossCases
from losses import (RECORDS, REFERENCES, REQUIRED, IncompleteReference, Kink, LossReference, has_kink,
                    referenced_losses)

NAMES = [spec.name for spec in LOSSES]
SIMD_LEVELS = ("avx512", "avx2", "baseline")
GRADIENT_SUPPORTS = {"everywhere", "active terms", "kept samples", "kept targets"}
GRADIENT_SIGNS = {"elementwise": {"x - y", "-y", "hard targets", "x - log y"}, "classes": {"target class", "target class only"}}


def test_references_cover_exactly_the_registry():
    names = [record.name for record in RECORDS]
    problems = [f"{name}: a registry loss without a LossReference in tests/support/losses.py"
                for name in BY_NAME if name not in names]
    problems += [f"{name}: a LossReference for a loss the registry does not have" for name in names
                 if name not in BY_NAME]
    problems += [f"{name}: {names.count(name)} LossReferences" for name in sorted(set(names)) if names.count(name) > 1]
    assert not problems, "\n".join(problems)
    assert [spec.name for spec in referenced_losses()] == NAMES


def _bound_problems(bounds, what):
    problems = []
    for dtype, bound in bounds.items():
        if np.dtype(dtype) not in (F32, F64):
            problems.append(f"{what}: {dtype} is not float32 or float64")
        per_level = bound if isinstance(bound, dict) else {level: bound for level in SIMD_LEVELS}
        if set(per_level) != set(SIMD_LEVELS):
            problems.append(f"{what}[{dtype}]: levels {sorted(per_level)}, not {SIMD_LEVELS}")
        for level, pair in per_level.items():
            if not (len(pair) == 2 and all(isinstance(v, float) and v >= 0 for v in pair)):
                problems.append(f"{what}[{dtype}][{level}]: {pair!r} is not (loss ULP, gradient ULP)")
    return problems


@pytest.mark.parametrize("name", NAMES)
def test_every_record_is_complete(name):
    """Every field the loss needs is given, and well formed."""
    assert name in REFERENCES, f"{name}: no LossReference in tests/support/losses.py (add one: its docstring says how)"
    record = REFERENCES[name]
    missing = record.missing_fields()
    assert not missing, f"{name}: the LossReference in tests/support/losses.py gives no {', '.join(missing)}"
    spec = record.spec
    problems = []
    if not isinstance(record.cases, LossCases) or not record.cases.params or not record.cases.shapes:
        problems.append("cases: not a LossCases with parameter combinations and shapes")
    for field in ("formula", "exact", "half_max_cases"):
        if not callable(getattr(record, field)):
            problems.append(f"{field}: not callable")
    if record.gradient_support not in GRADIENT_SUPPORTS:
        problems.append(f"gradient_support: {record.gradient_support!r} not one of {sorted(GRADIENT_SUPPORTS)}")
    own_rule = spec.kind == "elementwise" and callable(record.gradient_sign)
    if not own_rule and record.gradient_sign not in GRADIENT_SIGNS[spec.kind]:
        problems.append(f"gradient_sign: {record.gradient_sign!r} not one of {sorted(GRADIENT_SIGNS[spec.kind])} "
                        "(nor, elementwise, a rule of its own)")
    if record.exact_loss_terms is not None and (spec.kind != "elementwise" or not callable(record.exact_loss_terms)):
        problems.append("exact_loss_terms: an elementwise loss's callable, or None")
    if record.non_negative_if is not None and not callable(record.non_negative_if):
        problems.append("non_negative_if: neither None nor a condition on the target")
    ids = [vid for vid, _ in record.accuracy_variants]
    if not ids or len(set(ids)) != len(ids) or not all(callable(build) for _, build in record.accuracy_variants):
        problems.append(f"accuracy_variants: not distinct (id, builder) pairs: {ids}")
    if set(map(np.dtype, record.ulp_bounds)) != {F32, F64}:
        problems.append(f"ulp_bounds: bounds for {sorted(map(str, record.ulp_bounds))}, not float32 and float64")
    problems += _bound_problems(record.ulp_bounds, "ulp_bounds")
    problems += _bound_problems(record.numpy_ulp_bounds, "numpy_ulp_bounds")
    if not all(isinstance(k, Kink) for k in record.kinks):
        problems.append("kinks: not Kink records")
    if spec.kind == "classes" and any(k.id is None for k in record.kinks):
        problems.append("kinks: a class loss's kinks need ids")
    if spec.kind != "elementwise" and (record.soft_labels or record.exact_limits):
        problems.append("soft_labels / exact_limits: elementwise losses only")
    if not isinstance(record.exp_log, bool):
        problems.append("exp_log: not a bool")
    assert not problems, f"{name}: " + "; ".join(problems)


def test_a_missing_field_is_named_with_its_loss():
    """An empty record names every field it lacks; reading one fails naming loss and field."""
    empty = LossReference("l1_loss")
    required = [f.name for f in dataclasses.fields(LossReference) if f.default is REQUIRED]
    missing = empty.missing_fields()
    assert required and set(required) <= set(missing)
    assert "kinks" in missing and "huge_terms" in missing  # l1_loss has a kink and unbounded terms
    with pytest.raises(IncompleteReference, match="'l1_loss'.*'formula'"):
        empty.formula


def test_a_registry_loss_without_a_record_is_named(monkeypatch):
    """Looking up the record of a registry loss that has none fails naming the loss."""
    import losses

    fake = Loss("fake_loss", "elementwise", "A loss without a record.", functor="Fake", formula="x", gradient="1")
    monkeypatch.setitem(losses.BY_NAME, "fake_loss", fake)
    with pytest.raises(IncompleteReference, match="'fake_loss' has no LossReference"):
        REFERENCES["fake_loss"]
    assert "fake_loss" not in [spec.name for spec in referenced_losses()]


def test_kinks_are_given_where_the_formula_has_one():
    for spec in LOSSES:
        assert bool(REFERENCES[spec.name].kinks) == has_kink(spec), spec.name
