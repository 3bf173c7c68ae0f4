"""fastloss.xgboost inside real XGBoost training (issue 13, points 3 and 4).

Where XGBoost has the objective built in, a model trained with the fastloss objective
reproduces the built-in one's raw predictions to float32 rounding (``assert_same_model``).
How the starting margin is matched: XGBoost takes ``base_score`` of a built-in objective on
its mean scale (probability for ``binary:logistic``, mean for the log-link objectives) and
turns it into a margin through the link, while a custom objective takes ``base_score`` as the
margin itself. Each pair is given the same starting margin explicitly: margin 0, i.e.
``base_score=0.5`` (logistic) or ``1.0`` (Poisson, Gamma, Tweedie: log 1 = 0) for the
built-in, ``0.0`` for the custom objective and for the objectives on the identity scale
(squared error, softmax's margins). ``count:poisson`` also caps the leaf values with
``max_delta_step=0.7`` (XGBoost sets that default for it alone); the custom model is given
the same ``max_delta_step`` explicitly.

Absolute error and quantile: XGBoost's built-ins refit each leaf to the residuals' median
(quantile) after the tree is grown, which a gradient/Hessian objective cannot do: the first
tree's splits are identical, its leaf values are not (tested as such).

Everything runs single-threaded (``nthread=1``), deterministic, on 300 rows and 10 rounds.
XGBoost and scikit-learn (bundled data sets) are skipped where not installed; CI installs
them from the ``test`` extra.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from boosting_support import (
    ROUNDS,
    Spy,
    assert_same_model,
    breast_cancer,
    diabetes,
    leaf_values,
    loads,
    without,
)

import fastloss.xgboost as flx


@pytest.fixture(scope="module")
def xgb():
    return pytest.importorskip("xgboost")


@pytest.fixture(scope="module")
def data():
    return diabetes()


PARAMS = {"nthread": 1, "max_depth": 3, "eta": 0.3, "tree_method": "hist", "seed": 0,
          "disable_default_eval_metric": 1}


def margins(xgb, params, dtrain, obj=None, rounds=ROUNDS):
    booster = xgb.train({**PARAMS, **params}, dtrain, rounds, obj=obj)
    return booster.predict(dtrain, output_margin=True)


# (id, label field, built-in params, custom params, factory)
BUILTINS = [
    ("squared_error", "z", {"objective": "reg:squarederror", "base_score": 0.0}, {"base_score": 0.0},
     flx.squared_error),
    ("logistic", "binary", {"objective": "binary:logistic", "base_score": 0.5}, {"base_score": 0.0},
     flx.logistic),
    ("logistic_scale_pos_weight", "binary",
     {"objective": "binary:logistic", "base_score": 0.5, "scale_pos_weight": 2.5}, {"base_score": 0.0},
     lambda: flx.logistic(scale_pos_weight=2.5)),
    ("softmax", "classes", {"objective": "multi:softprob", "num_class": 4, "base_score": 0.0},
     {"num_class": 4, "base_score": 0.0}, lambda: flx.softmax(4)),
    ("poisson", "counts", {"objective": "count:poisson", "base_score": 1.0},
     {"base_score": 0.0, "max_delta_step": 0.7}, flx.poisson),
    ("gamma", "positive", {"objective": "reg:gamma", "base_score": 1.0}, {"base_score": 0.0}, flx.gamma),
    ("tweedie", "counts", {"objective": "reg:tweedie", "tweedie_variance_power": 1.3, "base_score": 1.0},
     {"base_score": 0.0}, lambda: flx.tweedie(1.3)),
    # reg:pseudohubererror estimates base_score when none is given: 0.0 for both
    ("pseudo_huber", "z", {"objective": "reg:pseudohubererror", "base_score": 0.0}, {"base_score": 0.0},
     flx.pseudo_huber),
    ("pseudo_huber_slope", "z", {"objective": "reg:pseudohubererror", "huber_slope": 0.3, "base_score": 0.0},
     {"base_score": 0.0}, lambda: flx.pseudo_huber(0.3)),
    ("pseudo_huber_large_slope", "z",
     {"objective": "reg:pseudohubererror", "huber_slope": 4.0, "base_score": 0.0},
     {"base_score": 0.0}, lambda: flx.pseudo_huber(delta=4.0)),
]


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("case", BUILTINS, ids=[c[0] for c in BUILTINS])
def test_reproduces_builtin_objective(xgb, data, case, weighted):
    _, field, builtin, custom, factory = case
    weight = data.weight if weighted else None
    dtrain = xgb.DMatrix(data.X, getattr(data, field), weight=weight)
    expected = margins(xgb, builtin, dtrain)
    got = margins(xgb, custom, dtrain, obj=factory())
    assert_same_model(got, expected)


def test_reproduction_is_not_vacuous(xgb, data):
    """The comparison would see a wrong Hessian: the exact softmax diagonal (hess_scale=1)
    instead of XGBoost's 2 p (1 - p) gives another model."""
    dtrain = xgb.DMatrix(data.X, data.classes)
    expected = margins(xgb, {"objective": "multi:softprob", "num_class": 4, "base_score": 0.0}, dtrain)
    got = margins(xgb, {"num_class": 4, "base_score": 0.0}, dtrain, obj=flx.softmax(4, hess_scale=1.0))
    with pytest.raises(AssertionError):
        assert_same_model(got, expected)


@pytest.mark.parametrize("case", [
    ("absolute_error", {"objective": "reg:absoluteerror"}, flx.absolute_error),
    ("quantile", {"objective": "reg:quantileerror", "quantile_alpha": 0.8}, lambda: flx.quantile(0.8)),
], ids=["absolute_error", "quantile"])
def test_refitting_builtins_share_the_splits_not_the_leaves(xgb, data, case):
    _, builtin, factory = case
    dtrain = xgb.DMatrix(data.X, data.z, weight=data.weight)
    trees = []
    for params, obj in ((builtin, None), ({}, factory())):
        booster = xgb.train({**PARAMS, "base_score": 0.0, **params}, dtrain, 1, obj=obj)
        trees.append(loads(booster.get_dump(dump_format="json")[0]))
    assert without(trees[0], {"leaf"}) == without(trees[1], {"leaf"})
    assert leaf_values(trees[0], "leaf") != leaf_values(trees[1], "leaf")


def test_metrics_match_scikit_learn(xgb, data):
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(5)
    raw = rng.normal(0.0, 0.7, size=data.z.shape).astype(np.float32)
    mu = np.exp(raw.astype(np.float64))
    w = data.weight
    for sw in (None, w):
        cases = [
            (flx.squared_error(), data.z, metrics.mean_squared_error(data.z, raw, sample_weight=sw)),
            (flx.absolute_error(), data.z, metrics.mean_absolute_error(data.z, raw, sample_weight=sw)),
            (flx.logistic(), data.binary,
             metrics.log_loss(data.binary, 1 / (1 + np.exp(-raw.astype(np.float64))), sample_weight=sw)),
            (flx.poisson(), data.counts, metrics.mean_poisson_deviance(data.counts, mu, sample_weight=sw)),
            (flx.gamma(), data.positive, metrics.mean_gamma_deviance(data.positive, mu, sample_weight=sw)),
            (flx.tweedie(1.3), data.counts,
             metrics.mean_tweedie_deviance(data.counts, mu, power=1.3, sample_weight=sw)),
            (flx.quantile(0.8), data.z, metrics.mean_pinball_loss(data.z, raw, alpha=0.8, sample_weight=sw)),
        ]
        for obj, label, expected in cases:
            dm = xgb.DMatrix(data.X, label, weight=sw)
            name, value = obj.metric(raw, dm)
            assert name == obj.name
            assert value == pytest.approx(expected, rel=2e-6), obj.name
            assert obj.sklearn_metric(label, raw, sample_weight=sw) == pytest.approx(expected, rel=2e-6)
        logits = rng.normal(size=(len(data.z), 4)).astype(np.float32)
        z = logits.astype(np.float64)
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        expected = metrics.log_loss(data.classes, p, sample_weight=sw, labels=[0, 1, 2, 3])
        _, value = flx.softmax(4).metric(logits, xgb.DMatrix(data.X, data.classes, weight=sw))
        assert value == pytest.approx(expected, rel=2e-6)


def test_metric_is_reported_during_training(xgb, data):
    """``custom_metric=obj.metric`` on the custom model reports XGBoost's own logloss of the
    built-in model, round by round."""
    dtrain = xgb.DMatrix(data.X, data.binary, weight=data.weight)
    builtin, custom = {}, {}
    xgb.train({**PARAMS, "objective": "binary:logistic", "base_score": 0.5, "eval_metric": "logloss",
               "disable_default_eval_metric": 0}, dtrain, ROUNDS, evals=[(dtrain, "train")],
              evals_result=builtin, verbose_eval=False)
    obj = flx.logistic()
    xgb.train({**PARAMS, "base_score": 0.0}, dtrain, ROUNDS, obj=obj, custom_metric=obj.metric,
              evals=[(dtrain, "train")], evals_result=custom, verbose_eval=False)
    np.testing.assert_allclose(custom["train"]["logloss"], builtin["train"]["logloss"], rtol=1e-5)


def test_sklearn_api_regressor_with_sample_weight(xgb, data):
    kw = {"n_estimators": ROUNDS, "max_depth": 3, "learning_rate": 0.3, "n_jobs": 1, "tree_method": "hist",
          "base_score": 0.0, "random_state": 0}
    obj = flx.squared_error()
    builtin = xgb.XGBRegressor(objective="reg:squarederror", **kw).fit(data.X, data.z, sample_weight=data.weight)
    custom = xgb.XGBRegressor(objective=obj.sklearn_objective, eval_metric=obj.sklearn_metric, **kw)
    custom.fit(data.X, data.z, sample_weight=data.weight, eval_set=[(data.X, data.z)],
               sample_weight_eval_set=[data.weight], verbose=False)
    assert_same_model(custom.predict(data.X, output_margin=True), builtin.predict(data.X, output_margin=True))
    history = custom.evals_result()["validation_0"]["mse"]
    assert len(history) == ROUNDS and history[-1] < history[0]


def test_sklearn_api_multiclass(xgb, data):
    kw = {"n_estimators": ROUNDS, "max_depth": 3, "learning_rate": 0.3, "n_jobs": 1, "tree_method": "hist",
          "base_score": 0.0, "random_state": 0}
    y = data.classes.astype(int)
    builtin = xgb.XGBClassifier(objective="multi:softprob", **kw).fit(data.X, y, sample_weight=data.weight)
    custom = xgb.XGBClassifier(objective=flx.softmax().sklearn_objective, **kw).fit(data.X, y, sample_weight=data.weight)
    assert_same_model(custom.predict(data.X, output_margin=True), builtin.predict(data.X, output_margin=True))


def test_cloned_estimator_gets_its_own_objective(xgb, data):
    """scikit-learn's clone deep-copies the objective: the copy has the configuration, not
    the buffers, and trains the same model."""
    base = pytest.importorskip("sklearn.base")
    obj = flx.poisson()
    kw = {"n_estimators": ROUNDS, "max_depth": 3, "n_jobs": 1, "base_score": 0.0, "max_delta_step": 0.7}
    model = xgb.XGBRegressor(objective=obj.sklearn_objective, **kw).fit(data.X, data.counts)
    clone = base.clone(model).fit(data.X, data.counts)
    assert clone.objective.__self__ is not obj and clone.objective.__self__.buffers[0] is not obj.buffers[0]
    np.testing.assert_array_equal(clone.predict(data.X, output_margin=True), model.predict(data.X, output_margin=True))


def test_focal_trains_on_breast_cancer(xgb):
    X, y, X_test, y_test = breast_cancer()
    obj = flx.focal(alpha=0.25, gamma=2.0)
    dtrain, dtest = xgb.DMatrix(X, y), xgb.DMatrix(X_test, y_test)
    history = {}
    booster = xgb.train({**PARAMS, "base_score": 0.0}, dtrain, 20, obj=obj, custom_metric=obj.metric,
                        evals=[(dtrain, "train"), (dtest, "test")], evals_result=history, verbose_eval=False)
    train = history["train"]["focal"]
    assert train[-1] < 0.2 * train[0]
    assert history["test"]["focal"][-1] < 0.5 * history["test"]["focal"][0]
    accuracy = np.mean((booster.predict(dtest, output_margin=True) > 0) == y_test)
    assert accuracy > 0.9


def test_log_cosh_trains_on_diabetes(xgb):
    datasets = pytest.importorskip("sklearn.datasets")
    X, y = datasets.load_diabetes(return_X_y=True)
    z = (y - y.mean()) / y.std()  # log-cosh is scale dependent: residuals of order 1
    dtrain, dtest = xgb.DMatrix(X[:350], z[:350]), xgb.DMatrix(X[350:], z[350:])
    obj = flx.log_cosh()
    history = {}
    booster = xgb.train({**PARAMS, "base_score": 0.0}, dtrain, 20, obj=obj, custom_metric=obj.metric,
                        evals=[(dtrain, "train")], evals_result=history, verbose_eval=False)
    assert history["train"]["log_cosh"][-1] < 0.5 * history["train"]["log_cosh"][0]
    pred = booster.predict(dtest, output_margin=True)
    r2 = 1 - np.mean((pred - z[350:]) ** 2) / np.var(z[350:])
    assert r2 > 0.3  # squared error reaches about 0.46 with the same settings


def test_pseudo_huber_metric_is_xgboosts_mphe(xgb, data):
    """The metric is XGBoost's mean pseudo-Huber error (mphe, huber_slope = delta), weighted."""
    dtrain = xgb.DMatrix(data.X, data.z, weight=data.weight)
    obj = flx.pseudo_huber(0.3)
    builtin, custom = {}, {}
    xgb.train({**PARAMS, "objective": "reg:pseudohubererror", "huber_slope": 0.3, "base_score": 0.0,
               "eval_metric": "mphe"}, dtrain, ROUNDS, evals=[(dtrain, "train")], evals_result=builtin,
              verbose_eval=False)
    xgb.train({**PARAMS, "base_score": 0.0}, dtrain, ROUNDS, obj=obj, custom_metric=obj.metric,
              evals=[(dtrain, "train")], evals_result=custom, verbose_eval=False)
    np.testing.assert_allclose(custom["train"]["pseudo_huber"], builtin["train"]["mphe"], rtol=1e-5)


@pytest.mark.parametrize("factory,field", [(flx.squared_error, "z"), (lambda: flx.softmax(4), "classes"),
                                           (flx.focal, "binary")], ids=["squared_error", "softmax", "focal"])
def test_buffers_are_float32_and_reused_every_round(xgb, data, factory, field):
    spy = Spy(factory())
    dtrain = xgb.DMatrix(data.X, getattr(data, field), weight=data.weight)
    xgb.train({**PARAMS, "base_score": 0.0, **({"num_class": 4} if field == "classes" else {})},
              dtrain, 5, obj=spy)
    assert len(spy.returned) == 5
    first_grad, first_hess = spy.returned[0]
    for grad, hess in spy.returned:
        assert grad is first_grad and hess is first_hess
        assert grad.dtype == np.float32 and hess.dtype == np.float32
        assert grad.flags.c_contiguous and hess.flags.c_contiguous
    assert spy.objective.buffers == (first_grad, first_hess)
    shape = (len(data.z), 4) if field == "classes" else (len(data.z),)
    assert first_grad.shape == shape


def test_sample_weights_scale_gradient_and_hessian(xgb, data):
    rng = np.random.default_rng(3)
    w = data.weight.copy()
    w[:10] = 0.0
    for factory, field, shape in [(flx.squared_error, "z", ()), (flx.logistic, "binary", ()),
                                  (flx.focal, "binary", ()), (flx.poisson, "counts", ()),
                                  (lambda: flx.softmax(4), "classes", (4,))]:
        label = getattr(data, field)
        raw = rng.normal(0, 0.5, size=(len(label), *shape)).astype(np.float32)
        plain = [a.copy() for a in factory()(raw, xgb.DMatrix(data.X, label))]
        weighted = factory()(raw, xgb.DMatrix(data.X, label, weight=w))
        wb = w.reshape(-1, *([1] * len(shape)))
        for p, q in zip(plain, weighted):
            np.testing.assert_allclose(q, p * wb, rtol=2e-6, atol=1e-30)
            assert not q[:10].any()


def test_hessian_conventions(xgb, data):
    """The Hessians are the built-ins' (as the reproduction tests show in training); the
    options give the exact ones: softmax hess_scale=1 is p (1 - p), Poisson
    max_delta_step=0 is exp(raw)."""
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(len(data.z), 4)).astype(np.float32)
    z = logits.astype(np.float64)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    dm = xgb.DMatrix(data.X, data.classes)
    _, hess = flx.softmax(4, hess_scale=1.0)(logits, dm)
    np.testing.assert_allclose(hess, p * (1 - p), rtol=1e-5, atol=1e-7)
    _, hess = flx.softmax(4)(logits, dm)
    np.testing.assert_allclose(hess, 2 * p * (1 - p), rtol=1e-5, atol=1e-7)
    raw = rng.normal(0, 0.5, size=len(data.z)).astype(np.float32)
    dm = xgb.DMatrix(data.X, data.counts)
    grad, hess = flx.poisson(max_delta_step=0.0)(raw, dm)
    np.testing.assert_allclose(hess, np.exp(raw.astype(np.float64)), rtol=1e-6)
    np.testing.assert_allclose(grad, np.exp(raw.astype(np.float64)) - data.counts, rtol=1e-5, atol=1e-6)
    _, hess = flx.poisson()(raw, dm)
    np.testing.assert_allclose(hess, np.exp(raw.astype(np.float64) + 0.7), rtol=1e-6)
    _, hess = flx.absolute_error()(raw, xgb.DMatrix(data.X, data.z))
    assert np.all(hess == 1.0)


def test_flat_multiclass_margins_are_row_major(xgb, data):
    """XGBoost before 2.0 passed multiclass margins flat, row-major; they give the same result."""
    logits = np.random.default_rng(6).normal(size=(len(data.z), 4)).astype(np.float32)
    dm = xgb.DMatrix(data.X, data.classes)
    two_d = [a.copy() for a in flx.softmax(4)(logits, dm)]
    flat = flx.softmax(4)(logits.reshape(-1), dm)
    for a, b in zip(two_d, flat):
        np.testing.assert_array_equal(a, b)


def test_float64_margins_are_computed_in_float32(xgb, data):
    raw = np.random.default_rng(7).normal(size=len(data.z))
    obj = flx.squared_error()
    grad, hess = obj.sklearn_objective(data.z, raw)
    assert grad.dtype == np.float32 and hess.dtype == np.float32
    np.testing.assert_allclose(grad, raw.astype(np.float32) - data.z.astype(np.float32), rtol=1e-6, atol=1e-6)


def test_softmax_labels_must_be_class_indices(xgb, data):
    logits = np.zeros((len(data.z), 4), np.float32)
    label = data.classes.copy()
    label[3] = 1.5
    with pytest.raises(ValueError, match="integer class indices"):
        flx.softmax(4)(logits, xgb.DMatrix(data.X, label))


def test_missing_xgboost_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "xgboost", None)  # as if not installed: import raises
    for factory in (flx.squared_error, flx.logistic, flx.softmax, flx.focal):
        with pytest.raises(ImportError, match=r"pip install 'fastloss\[xgboost\]'"):
            factory()


def test_importing_the_adapter_does_not_import_xgboost():
    code = "import sys, fastloss.xgboost; print('xgboost' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
