"""The test cases cover the registry: a loss, parameter or weight form added to
``fastloss._registry`` without test support fails here (and the record of a loss added
without one fails tests/contract/test_loss_references.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import cases
import reference
from cases import CASES, CLASS_WEIGHT, WEIGHT_FORMS, all_cases, cases_of
from fastloss._registry import BY_NAME, LOSSES
from losses import REFERENCES

NAMES = [spec.name for spec in LOSSES]


def test_every_table_covers_every_loss():
    """The per-loss records of tests/support/losses.py list every registry loss and nothing
    else: no loss falls back to a silent default. (Their completeness, field by field, is
    test_loss_references.py's.)"""
    problems = [f"tests/support/losses.py has no record for {name}" for name in BY_NAME if name not in REFERENCES]
    problems += [f"tests/support/losses.py has a record for {name}, not a registry loss"
                 for name in REFERENCES if name not in BY_NAME]
    # the per-kind default of cases.LossCases: one target form, "values", for elementwise losses
    problems += [f"the cases of {spec.name!r}: forms {CASES[spec.name].forms} for a {spec.kind} loss"
                 for spec in LOSSES if spec.name in REFERENCES
                 if (CASES[spec.name].forms == ("values",)) != (spec.kind == "elementwise")]
    assert not problems, "\n".join(problems)


def test_every_registry_loss_has_a_cases_entry():
    assert set(CASES) == set(BY_NAME)


def test_every_registry_loss_has_references():
    assert set(REFERENCES) == set(BY_NAME)
    for name in BY_NAME:
        assert callable(REFERENCES[name].formula) and callable(REFERENCES[name].exact), name
        if reference.HAVE_TORCH:
            assert callable(reference.torch_function(name)), name


@pytest.mark.parametrize("name", NAMES)
def test_cases_cover_every_parameter_and_form(name):
    spec = BY_NAME[name]
    mine = cases_of(name)
    used = [dict(c.params) for c in mine]
    for p in spec.params:
        values = {u[p.name] for u in used if p.name in u}
        assert values - {p.default}, f"{name}: no case with a non-default {p.name}"
    weight_forms = {u["weight"] for u in used if "weight" in u}
    if spec.weight == "elementwise":
        assert weight_forms == set(WEIGHT_FORMS), f"{name}: weight forms tested {weight_forms}"
    elif spec.weight == "class":
        assert weight_forms == {CLASS_WEIGHT}
    else:
        assert not weight_forms
    pos_forms = {u["pos_weight"] for u in used if "pos_weight" in u}
    assert bool(pos_forms) == spec.pos_weight
    if spec.pos_weight:
        assert len(pos_forms) >= 3
        assert any("weight" in u and "pos_weight" in u for u in used)
    forms = {c.form for c in mine}
    if spec.ignore_index:
        assert "indices+ignored" in forms
        explicit = {u["ignore_index"] for u in used if "ignore_index" in u}
        assert any(0 <= v < 4 for v in explicit), "an ignore_index that is a valid class"
        assert any(v < 0 for v in explicit)
    else:
        assert not any("ignore_index" in u for u in used)
    assert ("probabilities" in forms) == spec.probability_target
    ndims = {len(c.shape) for c in mine}
    if spec.kind == "elementwise":
        assert {0, 1, 2} <= ndims
    else:
        assert {1, 2} <= ndims
        assert (max(ndims) > 2) == (spec.max_input_dims is None)


@pytest.mark.parametrize("name", NAMES)
def test_invalid_parameter_values_are_invalid_in_the_registry(name):
    """The values derived from each parameter's domain (cases.invalid_values) are outside
    it, and there are some of every kind the domain has: NaN, each bound from outside (a
    bool parameter has none: both bools are valid, any other value is of a wrong type)."""
    for p in BY_NAME[name].params:
        assert p.valid(p.default)
        invalid = cases.invalid_values(p)
        assert bool(invalid) == (p.type is not bool), p.name
        for bad in invalid:
            assert not p.valid(bad), (p.name, bad)
        assert cases.INVALID_PARAM_VALUES[name, p.name] == invalid
        assert cases.wrong_type_values(p), p.name


@pytest.mark.parametrize("dtype", cases.DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", all_cases(), ids=str)
def test_generated_inputs_are_valid(case, dtype):
    spec = case.spec
    x, t, kw = case.generate(dtype)
    assert x.dtype == dtype and x.shape == case.shape
    assert np.isfinite(x).all()
    if spec.input_domain == "unit":
        assert ((x > 0) & (x < 1)).all()
    if spec.target_domain == "unit":
        assert ((t >= 0) & (t <= 1)).all()
    if spec.target_domain == "sign":
        assert np.isin(t, (-1.0, 1.0)).all()
    if spec.kind == "classes" and case.form != "probabilities":
        assert t.dtype == np.int64
        n_classes = case.shape[0 if len(case.shape) == 1 else 1]
        ignore = dict(case.params).get("ignore_index", -100 if spec.ignore_index else None)
        kept = t[t != ignore] if ignore is not None else t
        assert ((kept >= 0) & (kept < n_classes)).all()
        assert kept.size >= 1
        if case.form == "indices+ignored" and t.size >= 2:
            assert kept.size < t.size
    if case.form == "probabilities":
        np.testing.assert_allclose(t.sum(axis=0 if x.ndim == 1 else 1), 1, rtol=1e-5)
    # the same case generates the same data every time
    x2, t2, kw2 = case.generate(dtype)
    assert x.tobytes() == x2.tobytes() and np.asarray(t).tobytes() == np.asarray(t2).tobytes()


def test_without_torch_the_formulas_are_the_reference():
    """The suite on a machine without PyTorch: reference() falls back to the formulas and
    the reference tests pass with them (run here on the NumPy backend)."""
    tests = Path(__file__).resolve().parent.parent
    env = {**os.environ, "FASTLOSS_TESTS_WITHOUT_TORCH": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-x", str(tests / "numerics" / "test_values.py"),
         "-k", "test_matches_reference and numpy"],
        cwd=tests.parent, env=env, capture_output=True, text=True, timeout=600,
    )
    assert "reference: formulas" in proc.stdout, proc.stdout[-2000:]
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert " passed" in proc.stdout and "skipped" not in proc.stdout
