"""Data and assertions shared by tests/boosting (the XGBoost and LightGBM adapters).

The data are scikit-learn's bundled real data sets (no download): the first 300 rows of the
diabetes regression set (10 features) and the breast-cancer classification set (569 rows,
30 features). Labels for the objectives that need another kind of target are derived from
the diabetes target with a fixed seed (counts for Poisson/Tweedie, classes for softmax).
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

ROWS = 300
ROUNDS = 10  # boosting rounds of the reproduction tests
EPS32 = float(np.finfo(np.float32).eps)


def diabetes():
    datasets = pytest.importorskip("sklearn.datasets")
    X, y = datasets.load_diabetes(return_X_y=True)
    X, y = X[:ROWS], y[:ROWS]
    rng = np.random.default_rng(13)
    z = (y - y.mean()) / y.std()
    return SimpleNamespace(
        X=X,
        z=z,                                                  # standardised target
        binary=(y > np.median(y)).astype(np.float64),
        classes=np.digitize(y, np.quantile(y, [0.25, 0.5, 0.75])).astype(np.float64),  # K = 4
        counts=rng.poisson(np.exp(z)).astype(np.float64),     # zeros included
        positive=y / 100.0,                                   # gamma: strictly positive
        weight=rng.uniform(0.5, 2.0, ROWS),
    )


def breast_cancer():
    datasets = pytest.importorskip("sklearn.datasets")
    X, y = datasets.load_breast_cancer(return_X_y=True)
    order = np.random.default_rng(13).permutation(len(y))
    return X[order[:400]], y[order[:400]].astype(np.float64), X[order[400:]], y[order[400:]].astype(np.float64)


def assert_same_model(ours, builtin, rounds=ROUNDS):
    """The two models' raw predictions agree to float32 rounding.

    Both boosters build float32 gradients and Hessians (fastloss's and the built-in
    objective's agree to an ulp or so; the exact float32 operations differ) and sum float32
    leaf values, so each of the ``rounds`` trees may shift a prediction by a few ulps of the
    predictions' scale: the bound is ``rounds * eps32 * max(1, max|prediction|)``. A different
    split anywhere would move predictions by a leaf value, 0.01 to 1 here, orders of
    magnitude above it."""
    ours, builtin = np.asarray(ours, np.float64), np.asarray(builtin, np.float64)
    assert ours.shape == builtin.shape
    tol = rounds * EPS32 * max(1.0, float(np.abs(builtin).max()))
    worst = float(np.abs(ours - builtin).max())
    assert worst <= tol, f"predictions differ by up to {worst:.3g} (> {tol:.3g}, float32 rounding over {rounds} rounds)"


def without(node, keys):
    """A parsed tree dump without the given keys (leaf values), to compare tree shapes."""
    if isinstance(node, dict):
        return {k: without(v, keys) for k, v in node.items() if k not in keys}
    if isinstance(node, list):
        return [without(v, keys) for v in node]
    return node


def leaf_values(node, key):
    """Every value under ``key`` in a parsed tree dump, in order."""
    found = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                found.append(v)
            else:
                found.extend(leaf_values(v, key))
    elif isinstance(node, list):
        for v in node:
            found.extend(leaf_values(v, key))
    return found


def loads(text):
    return json.loads(text)


class Spy:
    """Wraps a native objective and keeps what it returned each round. A copy is the spy
    itself (lgb.train deep-copies its params, the objective with them)."""

    def __init__(self, objective):
        self.objective = objective
        self.returned = []

    def __deepcopy__(self, memo):
        return self

    def __call__(self, preds, data):
        grad, hess = self.objective(preds, data)
        self.returned.append((grad, hess))
        return grad, hess


def data_pointer(a):
    return a.__array_interface__["data"][0]
