"""fastloss.lightgbm inside real LightGBM training (issue 13, points 3 and 4).

Where LightGBM has the objective built in, a model trained with the fastloss objective
reproduces the built-in one's raw predictions to float32 rounding (``assert_same_model``).
How the starting score is matched: a custom objective starts from 0; the built-ins start
from the label average (on their link scale) unless ``boost_from_average=False``, which
every built-in model here sets, so both start from 0. LightGBM's built-ins compute the
gradient in float64 and round it to float32; the adapter rounds the float64 scores to
float32 first and computes in float32 (see fastloss.lightgbm), which the tolerance covers.

Absolute error (``l1``) and ``quantile``: LightGBM refits each leaf to the residuals' median
(quantile) after the tree is grown, which a gradient/Hessian objective cannot do: the first
tree's splits are identical, its leaf values are not (tested as such).

Everything runs single-threaded (``num_threads=1``, ``deterministic=True``), on 300 rows and
10 rounds. LightGBM and scikit-learn (bundled data sets) are skipped where not installed; CI
installs them from the ``test`` extra.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from boosting_support import ROUNDS, Spy, assert_same_model, breast_cancer, data_pointer, diabetes, leaf_values, without

import fastloss.lightgbm as fll
from fastloss import _boosting
from helpers import assert_bitwise


@pytest.fixture(scope="module")
def lgb():
    return pytest.importorskip("lightgbm")


@pytest.fixture(scope="module")
def data():
    return diabetes()


PARAMS = {"num_threads": 1, "deterministic": True, "force_col_wise": True, "verbose": -1, "seed": 0,
          "boost_from_average": False, "num_leaves": 8, "learning_rate": 0.3, "metric": "None"}


def train(lgb, params, X, label, weight=None, rounds=ROUNDS, **kw):
    return lgb.train({**PARAMS, **params}, lgb.Dataset(X, label, weight=weight), rounds, **kw)


# (id, label field, built-in params, factory, extra params for both)
BUILTINS = [
    ("squared_error", "z", {"objective": "regression"}, fll.squared_error, {}),
    ("huber", "z", {"objective": "huber", "alpha": 0.7}, lambda: fll.huber(0.7), {}),
    ("logistic", "binary", {"objective": "binary"}, fll.logistic, {}),
    ("logistic_scale_pos_weight", "binary", {"objective": "binary", "scale_pos_weight": 2.5},
     lambda: fll.logistic(scale_pos_weight=2.5), {}),
    ("softmax", "classes", {"objective": "multiclass"}, lambda: fll.softmax(4), {"num_class": 4}),
    ("poisson", "counts", {"objective": "poisson"}, fll.poisson, {}),
    ("gamma", "positive", {"objective": "gamma"}, fll.gamma, {}),
    ("tweedie", "counts", {"objective": "tweedie", "tweedie_variance_power": 1.3}, lambda: fll.tweedie(1.3), {}),
]


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("case", BUILTINS, ids=[c[0] for c in BUILTINS])
def test_reproduces_builtin_objective(lgb, data, case, weighted):
    _, field, builtin, factory, both = case
    weight = data.weight if weighted else None
    label = getattr(data, field)
    expected = train(lgb, {**builtin, **both}, data.X, label, weight).predict(data.X, raw_score=True)
    got = train(lgb, {"objective": factory(), **both}, data.X, label, weight).predict(data.X, raw_score=True)
    assert_same_model(got, expected)


def test_reproduction_is_not_vacuous(lgb, data):
    """The comparison would see a wrong Hessian: the exact softmax diagonal (hess_scale=1)
    instead of LightGBM's K / (K - 1) p (1 - p) gives another model."""
    expected = train(lgb, {"objective": "multiclass", "num_class": 4}, data.X, data.classes).predict(data.X, raw_score=True)
    got = train(lgb, {"objective": fll.softmax(4, hess_scale=1.0), "num_class": 4}, data.X,
                data.classes).predict(data.X, raw_score=True)
    with pytest.raises(AssertionError):
        assert_same_model(got, expected)


@pytest.mark.parametrize("case", [
    ("absolute_error", {"objective": "l1"}, fll.absolute_error),
    ("quantile", {"objective": "quantile", "alpha": 0.8}, lambda: fll.quantile(0.8)),
], ids=["absolute_error", "quantile"])
def test_refitting_builtins_share_the_splits_not_the_leaves(lgb, data, case):
    _, builtin, factory = case
    trees = []
    for params in (builtin, {"objective": factory()}):
        booster = train(lgb, params, data.X, data.z, data.weight, rounds=1)
        trees.append(booster.dump_model()["tree_info"][0]["tree_structure"])
    values = {"leaf_value", "internal_value"}
    assert without(trees[0], values) == without(trees[1], values)
    assert leaf_values(trees[0], "leaf_value") != leaf_values(trees[1], "leaf_value")


def test_metrics_match_scikit_learn(lgb, data):
    """LightGBM passes float64 scores to the metric; they are evaluated in float64 (against
    the labels and weights as the Dataset stores them: float32)."""
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(5)
    raw = rng.normal(0.0, 0.7, size=data.z.shape)
    mu = np.exp(raw)
    f32 = lambda a: None if a is None else a.astype(np.float32).astype(np.float64)
    z, binary, counts, positive = f32(data.z), data.binary, data.counts, f32(data.positive)
    for sw in (None, f32(data.weight)):
        cases = [
            (fll.squared_error(), z, metrics.mean_squared_error(z, raw, sample_weight=sw)),
            (fll.absolute_error(), z, metrics.mean_absolute_error(z, raw, sample_weight=sw)),
            (fll.logistic(), binary, metrics.log_loss(binary, 1 / (1 + np.exp(-raw)), sample_weight=sw)),
            (fll.poisson(), counts, metrics.mean_poisson_deviance(counts, mu, sample_weight=sw)),
            (fll.gamma(), positive, metrics.mean_gamma_deviance(positive, mu, sample_weight=sw)),
            (fll.tweedie(1.3), counts, metrics.mean_tweedie_deviance(counts, mu, power=1.3, sample_weight=sw)),
            (fll.quantile(0.8), z, metrics.mean_pinball_loss(z, raw, alpha=0.8, sample_weight=sw)),
        ]
        for obj, label, expected in cases:
            ds = lgb.Dataset(data.X, label, weight=sw).construct()
            name, value, higher_better = obj.metric(raw, ds)
            assert (name, higher_better) == (obj.name, False)
            assert value == pytest.approx(expected, rel=1e-9), obj.name
            assert obj.sklearn_metric(label, raw, sw)[1] == pytest.approx(expected, rel=1e-9)
        scores = rng.normal(size=(len(data.z), 4))
        p = np.exp(scores - scores.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        expected = metrics.log_loss(data.classes, p, sample_weight=sw, labels=[0, 1, 2, 3])
        ds = lgb.Dataset(data.X, data.classes, weight=sw).construct()
        class_major = np.asfortranarray(scores)  # LightGBM's (n, K) view of class-major scores
        assert fll.softmax(4).metric(class_major, ds)[1] == pytest.approx(expected, rel=1e-9)
        assert fll.softmax(4).metric(class_major.T.reshape(-1), ds)[1] == pytest.approx(expected, rel=1e-9)


def test_feval_reports_builtin_metric_during_training(lgb, data):
    """``feval=obj.metric`` on the custom model reports LightGBM's own binary_logloss of the
    built-in model, round by round."""
    builtin, custom = {}, {}
    ds = lgb.Dataset(data.X, data.binary, weight=data.weight, free_raw_data=False)
    lgb.train({**PARAMS, "objective": "binary", "metric": "binary_logloss"}, ds, ROUNDS, valid_sets=[ds],
              valid_names=["train"], callbacks=[lgb.record_evaluation(builtin)])
    obj = fll.logistic()
    ds = lgb.Dataset(data.X, data.binary, weight=data.weight, free_raw_data=False)
    lgb.train({**PARAMS, "objective": obj}, ds, ROUNDS, valid_sets=[ds], valid_names=["train"],
              feval=obj.metric, callbacks=[lgb.record_evaluation(custom)])
    np.testing.assert_allclose(custom["train"]["logloss"], builtin["train"]["binary_logloss"], rtol=1e-6)


@pytest.mark.filterwarnings("ignore:The argument 'eval_set' is deprecated")  # LightGBM 4.7; kept for 4.0
def test_sklearn_api_regressor_with_sample_weight(lgb, data):
    kw = {"n_estimators": ROUNDS, "num_leaves": 8, "learning_rate": 0.3, "n_jobs": 1, "deterministic": True,
          "force_col_wise": True, "verbose": -1, "boost_from_average": False, "random_state": 0}
    obj = fll.squared_error()
    builtin = lgb.LGBMRegressor(objective="regression", **kw).fit(data.X, data.z, sample_weight=data.weight)
    custom = lgb.LGBMRegressor(objective=obj.sklearn_objective, **kw)
    custom.fit(data.X, data.z, sample_weight=data.weight, eval_set=[(data.X, data.z)],
               eval_sample_weight=[data.weight], eval_metric=obj.sklearn_metric)
    assert_same_model(custom.predict(data.X, raw_score=True), builtin.predict(data.X, raw_score=True))
    history = custom.evals_result_["training"]
    np.testing.assert_allclose(history["mse"], history["l2"], rtol=1e-9)  # LightGBM's l2 of the same model


def test_sklearn_api_multiclass(lgb, data):
    kw = {"n_estimators": ROUNDS, "num_leaves": 8, "learning_rate": 0.3, "n_jobs": 1, "deterministic": True,
          "force_col_wise": True, "verbose": -1, "boost_from_average": False, "random_state": 0}
    y = data.classes.astype(int)
    builtin = lgb.LGBMClassifier(objective="multiclass", **kw).fit(data.X, y, sample_weight=data.weight)
    custom = lgb.LGBMClassifier(objective=fll.softmax().sklearn_objective, **kw).fit(data.X, y, sample_weight=data.weight)
    assert_same_model(custom.predict(data.X, raw_score=True), builtin.predict(data.X, raw_score=True))


def test_focal_trains_on_breast_cancer(lgb):
    X, y, X_test, y_test = breast_cancer()
    obj = fll.focal(alpha=0.25, gamma=2.0)
    history = {}
    booster = lgb.train({**PARAMS, "objective": obj}, lgb.Dataset(X, y), 20,
                        valid_sets=[lgb.Dataset(X, y), lgb.Dataset(X_test, y_test)], valid_names=["train", "test"],
                        feval=obj.metric, callbacks=[lgb.record_evaluation(history)])
    assert history["train"]["focal"][-1] < 0.3 * history["train"]["focal"][0]
    assert history["test"]["focal"][-1] < 0.6 * history["test"]["focal"][0]
    accuracy = np.mean((booster.predict(X_test, raw_score=True) > 0) == y_test)
    assert accuracy > 0.9


@pytest.mark.parametrize("factory,metric", [(fll.log_cosh, "log_cosh"),
                                            (lambda: fll.pseudo_huber(delta=0.5), "pseudo_huber")],
                         ids=["log_cosh", "pseudo_huber"])
def test_smooth_robust_losses_train_on_diabetes(lgb, factory, metric):
    datasets = pytest.importorskip("sklearn.datasets")
    X, y = datasets.load_diabetes(return_X_y=True)
    z = (y - y.mean()) / y.std()  # both are scale dependent: residuals of order 1 (delta)
    obj = factory()
    history = {}
    booster = lgb.train({**PARAMS, "objective": obj}, lgb.Dataset(X[:350], z[:350]), 20,
                        valid_sets=[lgb.Dataset(X[:350], z[:350])], valid_names=["train"], feval=obj.metric,
                        callbacks=[lgb.record_evaluation(history)])
    assert history["train"][metric][-1] < 0.6 * history["train"][metric][0]
    pred = booster.predict(X[350:], raw_score=True)
    r2 = 1 - np.mean((pred - z[350:]) ** 2) / np.var(z[350:])
    assert r2 > 0.3


@pytest.mark.parametrize("factory,field,extra", [(fll.squared_error, "z", {}),
                                                 (lambda: fll.softmax(4), "classes", {"num_class": 4}),
                                                 (fll.focal, "binary", {})], ids=["squared_error", "softmax", "focal"])
def test_buffers_are_float32_and_reused_every_round(lgb, data, factory, field, extra):
    spy = Spy(factory())
    train(lgb, {"objective": spy, **extra}, data.X, getattr(data, field), data.weight, rounds=5)
    assert len(spy.returned) == 5
    first_grad, first_hess = spy.returned[0]
    for grad, hess in spy.returned:
        assert data_pointer(grad) == data_pointer(first_grad) and data_pointer(hess) == data_pointer(first_hess)
        assert grad.dtype == np.float32 and hess.dtype == np.float32
    if field == "classes":
        # (n, K) Fortran-ordered views of class-major buffers: LightGBM's ravel(order="F")
        # is a view, and the float32 array is passed on without a copy.
        assert first_grad.shape == (len(data.z), 4) and first_grad.flags.f_contiguous
        assert np.shares_memory(first_grad.ravel(order="F"), first_grad)
    else:
        assert first_grad is spy.returned[-1][0] and first_grad.flags.c_contiguous


def test_multiclass_layouts(lgb, data):
    """LightGBM 4 passes an (n, K) Fortran view of class-major float64 scores; older versions
    the flat class-major vector. Both give the same gradient and Hessian, returned in the
    layout they came in."""
    scores = np.random.default_rng(6).normal(size=(len(data.z), 4))
    ds = lgb.Dataset(data.X, data.classes).construct()
    view = np.asfortranarray(scores)
    g2, h2 = [a.copy() for a in fll.softmax(4)(view, ds)]
    gf, hf = fll.softmax(4)(view.T.reshape(-1), ds)
    assert gf.shape == (scores.size,)
    np.testing.assert_array_equal(gf, g2.T.reshape(-1))
    np.testing.assert_array_equal(hf, h2.T.reshape(-1))
    p = np.exp(scores - scores.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    onehot = np.eye(4)[data.classes.astype(int)]
    np.testing.assert_allclose(g2, p - onehot, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h2, 4 / 3 * p * (1 - p), rtol=1e-5, atol=1e-6)


def test_multiclass_class_major_without_a_transpose(lgb, data):
    """The class-major scores are computed as they lie (cross_entropy's (1, K, n) layout):
    the arrays returned are the objective's own (K, n) buffers, and they hold the bits of
    the row-major computation (XGBoost's layout) of the same float32 scores, weighted too."""
    scores = np.random.default_rng(8).normal(0, 3, size=(len(data.z), 4))
    ds = lgb.Dataset(data.X, data.classes, weight=data.weight).construct()
    obj = fll.softmax(4)
    grad, hess = obj(np.asfortranarray(scores), ds)
    kn = obj.buffers
    assert kn[0].shape == (4, len(data.z)) and np.shares_memory(grad, kn[0]) and np.shares_memory(hess, kn[1])
    rows = _boosting.SoftmaxObjective(hess_scale=None)
    g, h = rows.grad_hess(scores.astype(np.float32), data.classes, ds.get_weight())  # (float32, as LightGBM keeps them)
    assert_bitwise(grad, g, "grad")
    assert_bitwise(hess, h, "hess")


def test_sample_weights_scale_gradient_and_hessian(lgb, data):
    rng = np.random.default_rng(3)
    w = data.weight.copy()
    w[:10] = 0.0
    for factory, field, k in [(fll.squared_error, "z", 0), (fll.huber, "z", 0), (fll.focal, "binary", 0),
                              (fll.gamma, "positive", 0), (lambda: fll.softmax(4), "classes", 4)]:
        label = getattr(data, field)
        raw = rng.normal(0, 0.5, size=(len(label), k) if k else len(label))
        raw = np.asfortranarray(raw)
        plain = [a.copy() for a in factory()(raw, lgb.Dataset(data.X, label).construct())]
        weighted = factory()(raw, lgb.Dataset(data.X, label, weight=w).construct())
        wb = w.reshape(-1, 1) if k else w
        for p, q in zip(plain, weighted):
            np.testing.assert_allclose(q, p * wb, rtol=2e-6, atol=1e-30)
            assert not q[:10].any()


def test_dataset_arrays_are_converted_once(lgb, data):
    """LightGBM hands back the same label and weight arrays every round: the scaled weight
    (half loss: w / 2) is computed once and reused, not per round."""
    obj = fll.squared_error()
    ds = lgb.Dataset(data.X, data.z, weight=data.weight).construct()
    raw = np.zeros(len(data.z))
    obj(raw, ds)
    slots = dict(obj._core._converted._slots)
    obj(raw + 1.0, ds)
    assert obj._core._converted._slots.keys() == slots.keys()
    for key, (src, buf) in obj._core._converted._slots.items():
        assert src is slots[key][0] and buf is slots[key][1]


def test_copies_share_configuration_not_buffers(lgb, data):
    """lgb.train deep-copies its params, the objective with them: the copy (as a pickle)
    computes the same thing into buffers of its own."""
    import copy
    import pickle

    obj = fll.tweedie(1.3)
    ds = lgb.Dataset(data.X, data.counts, weight=data.weight).construct()
    raw = np.random.default_rng(8).normal(size=len(data.z))
    grad, hess = obj(raw, ds)
    for other in (copy.deepcopy(obj), pickle.loads(pickle.dumps(obj))):
        assert other.buffers == (None, None) and other.name == obj.name
        g, h = other(raw, ds)
        assert g is not grad
        np.testing.assert_array_equal(g, grad)
        np.testing.assert_array_equal(h, hess)
    soft = fll.softmax(4)
    assert copy.deepcopy(soft).num_class == 4


def test_missing_lightgbm_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "lightgbm", None)  # as if not installed: import raises
    for factory in (fll.squared_error, fll.logistic, fll.softmax, fll.focal):
        with pytest.raises(ImportError, match=r"pip install 'fastloss\[lightgbm\]'"):
            factory()


def test_importing_the_adapter_does_not_import_lightgbm():
    code = "import sys, fastloss.lightgbm; print('lightgbm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_sklearn_objective_counts_three_arguments(lgb):
    """LightGBM's scikit-learn wrapper passes the sample weights to an objective of exactly
    three parameters (it counts them)."""
    import inspect

    obj = fll.squared_error()
    assert len(inspect.signature(obj.sklearn_objective).parameters) == 3
    assert len(inspect.signature(obj.sklearn_metric).parameters) == 3
