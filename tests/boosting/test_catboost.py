"""fastloss.catboost inside real CatBoost training (issue 13, points 3 and 4).

Where CatBoost has the objective built in (``RMSE``, ``Logloss``, ``Tweedie``), a model
trained with the fastloss objective reproduces the built-in one's raw predictions to float32
rounding (``assert_same_model``; CatBoost computes in float64, as the adapter does). The
starting score: a custom objective starts from 0, the built-ins too with
``boost_from_average=False``. Randomness is off (``bootstrap_type="No"``,
``random_strength=0``) and leaves take one Newton step, the method a derivative objective
gets.

``Poisson``: CatBoost's built-in Poisson differs from its own derivatives from the second
tree on (a NumPy objective written from CatBoost's documented derivatives ``y - exp(x)``,
``-exp(x)`` diverges from it exactly as fastloss does, while fastloss and that NumPy
objective agree): tested as such, first tree equal to the built-in, later trees equal to the
NumPy objective's.

Everything single-threaded (``thread_count=1``), 300 rows, 10 rounds. CatBoost is skipped
where not installed; CI installs it from the ``test`` extra.
"""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest
from boosting_support import ROUNDS, assert_same_model, breast_cancer, diabetes

import fastloss.catboost as flc


@pytest.fixture(scope="module")
def cb():
    return pytest.importorskip("catboost")


@pytest.fixture(scope="module")
def data():
    return diabetes()


PARAMS = {"iterations": ROUNDS, "depth": 3, "learning_rate": 0.3, "random_seed": 0, "bootstrap_type": "No",
          "random_strength": 0, "boost_from_average": False, "leaf_estimation_method": "Newton",
          "leaf_estimation_iterations": 1, "thread_count": 1, "verbose": 0, "allow_writing_files": False}


def train(cb, loss, X, label, weight=None, **params):
    metric = loss.metric if isinstance(loss, flc.CatBoostObjective) else "RMSE"
    model = cb.CatBoostRegressor(loss_function=loss, eval_metric=metric, **{**PARAMS, **params})
    return model.fit(X, label, sample_weight=weight)


def raw(model, X, trees=0):
    return model.predict(X, prediction_type="RawFormulaVal", ntree_end=trees)


BUILTINS = [
    ("squared_error", "z", "RMSE", flc.squared_error),
    ("logistic", "binary", "Logloss", flc.logistic),
    ("tweedie", "counts", "Tweedie:variance_power=1.3", lambda: flc.tweedie(1.3)),
]


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("case", BUILTINS, ids=[c[0] for c in BUILTINS])
def test_reproduces_builtin_objective(cb, data, case, weighted):
    _, field, builtin, factory = case
    weight = data.weight if weighted else None
    label = getattr(data, field)
    if builtin == "Logloss":  # the classifier's raw score is the logit, as the regressor's here
        expected = raw(cb.CatBoostClassifier(loss_function="Logloss", **PARAMS).fit(data.X, label, sample_weight=weight),
                       data.X)
    else:
        expected = raw(train(cb, builtin, data.X, label, weight), data.X)
    assert_same_model(raw(train(cb, factory(), data.X, label, weight), data.X), expected)


def test_reproduction_is_not_vacuous(cb, data):
    """The comparison would see a wrong Hessian: twice RMSE's gives another model."""

    class Doubled:
        def __init__(self):
            self.inner = flc.squared_error()

        def calc_ders_range(self, approxes, targets, weights):
            ders = self.inner.calc_ders_range(approxes, targets, weights)
            ders[:, 1] *= 2.0
            return ders

    expected = raw(train(cb, "RMSE", data.X, data.z), data.X)
    model = cb.CatBoostRegressor(loss_function=Doubled(), eval_metric="RMSE", **PARAMS).fit(data.X, data.z)
    with pytest.raises(AssertionError):
        assert_same_model(raw(model, data.X), expected)


class NumpyPoisson:
    """CatBoost's documented Poisson derivatives, as a user writes them in NumPy."""

    def calc_ders_range(self, approxes, targets, weights):
        mu = np.exp(np.asarray(approxes))
        ders = np.column_stack((np.asarray(targets) - mu, -mu))
        return ders if weights is None else ders * np.asarray(weights)[:, None]


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_poisson_first_tree_is_builtin_and_all_trees_are_the_numpy_objective(cb, data, weighted):
    weight = data.weight if weighted else None
    ours = train(cb, flc.poisson(), data.X, data.counts, weight)
    builtin = train(cb, "Poisson", data.X, data.counts, weight)
    by_hand = cb.CatBoostRegressor(loss_function=NumpyPoisson(), eval_metric="RMSE", **PARAMS).fit(
        data.X, data.counts, sample_weight=weight)
    assert_same_model(raw(ours, data.X, 1), raw(builtin, data.X, 1), rounds=1)
    assert_same_model(raw(ours, data.X), raw(by_hand, data.X))


def test_ders_are_minus_gradient_and_hessian_of_the_adapters_core(cb, data):
    """CatBoost maximises: (der1, der2) = (-grad, -hess) of fastloss.xgboost's objective,
    float64, weights multiplied in."""
    import fastloss.xgboost as flx

    x = np.linspace(-2.0, 2.0, data.binary.size)
    for ours, theirs in ((flc.logistic(), flx.logistic()), (flc.tweedie(1.3), flx.tweedie(1.3))):
        ders = ours.calc_ders_range(x, data.binary, data.weight)
        assert ders.dtype == np.float64 and ders.shape == (x.size, 2)
        g, h = theirs._core.grad_hess(x, data.binary, data.weight)  # float64 in, float64 out
        np.testing.assert_array_equal(ders[:, 0], -g)
        np.testing.assert_array_equal(ders[:, 1], -h)


def test_metric_is_the_weighted_mean_loss(cb, data):
    obj = flc.squared_error()
    x = np.linspace(-1.0, 1.0, data.z.size)
    err, wsum = obj.metric.evaluate([x], data.z, data.weight)
    assert wsum == pytest.approx(data.weight.sum(), rel=1e-15)
    expected = np.sum(data.weight * (x - data.z) ** 2) / data.weight.sum()
    assert obj.metric.get_final_error(err, wsum) == pytest.approx(expected, rel=1e-12)
    assert obj.metric.is_max_optimal() is False
    err, wsum = obj.metric.evaluate([x], data.z, None)
    assert obj.metric.get_final_error(err, wsum) == pytest.approx(np.mean((x - data.z) ** 2), rel=1e-12)


def test_metric_reported_during_training(cb, data):
    obj = flc.squared_error()
    model = cb.CatBoostRegressor(loss_function=obj, eval_metric=obj.metric, **PARAMS)
    model.fit(data.X, data.z, eval_set=(data.X, data.z))
    history = model.get_evals_result()["validation"]
    (name,) = [k for k in history if k != "RMSE"] or ["RMSE"]
    final = history[name][-1]
    pred = raw(model, data.X)
    # (the evaluation runs on the training's approxes, the prediction on the stored model:
    # they agree to float32 rounding)
    assert final == pytest.approx(np.mean((pred - data.z) ** 2), rel=1e-7)


def test_focal_trains_on_breast_cancer(cb):
    X, y, X_test, y_test = breast_cancer()
    obj = flc.focal()
    model = cb.CatBoostRegressor(loss_function=obj, eval_metric=obj.metric, **{**PARAMS, "iterations": 50})
    model.fit(X, y)
    accuracy = np.mean((raw(model, X_test) > 0) == (y_test > 0.5))
    assert accuracy > 0.9


def test_pseudo_huber_trains_on_diabetes(cb):
    datasets = pytest.importorskip("sklearn.datasets")
    X, y = datasets.load_diabetes(return_X_y=True)
    z = (y - y.mean()) / y.std()  # pseudo-Huber is scale dependent: residuals of order delta
    obj = flc.pseudo_huber(delta=0.5)
    model = cb.CatBoostRegressor(loss_function=obj, eval_metric=obj.metric, **{**PARAMS, "iterations": 50})
    model.fit(X[:350], z[:350])
    for part in (slice(None, 350), slice(350, None)):  # the metric falls, the fit holds out of sample
        pred = raw(model, X[part])
        assert obj.metric.evaluate([pred], z[part], None)[0] < 0.6 * obj.metric.evaluate([0 * pred], z[part], None)[0]
    pred = raw(model, X[350:])
    assert 1 - np.mean((pred - z[350:]) ** 2) / np.var(z[350:]) > 0.3


def test_bad_ranges_are_clear_errors(cb):
    obj = flc.squared_error()
    with pytest.raises(ValueError, match="targets"):
        obj.calc_ders_range(np.zeros(3), np.zeros(2), None)
    with pytest.raises(ValueError, match="approxes must be one-dimensional"):
        obj.calc_ders_range(np.zeros((3, 2)), np.zeros(3), None)
    with pytest.raises(ValueError, match="one approx dimension"):
        obj.metric.evaluate([np.zeros(3), np.zeros(3)], np.zeros(3), None)


def test_copies_share_configuration_not_buffers(cb, data):
    obj = flc.tweedie(1.3)
    obj.calc_ders_range(np.zeros(data.counts.size), data.counts, None)
    copy = pickle.loads(pickle.dumps(obj))
    assert copy.name == obj.name and copy._core.buffers == (None, None)
    np.testing.assert_array_equal(copy.calc_ders_range(np.ones(4), data.counts[:4], None),
                                  obj.calc_ders_range(np.ones(4), data.counts[:4], None))


def test_missing_catboost_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "catboost", None)  # as if not installed: import raises
    for factory in (flc.squared_error, flc.logistic, flc.poisson, flc.focal):
        with pytest.raises(ImportError, match=r"pip install 'fastloss\[catboost\]'"):
            factory()


def test_importing_the_adapter_does_not_import_catboost():
    code = "import sys, fastloss.catboost; print('catboost' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
