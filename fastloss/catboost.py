"""Custom CatBoost objectives and metrics computed by fastloss.

CatBoost's Python objective protocol is ``calc_ders_range(approxes, targets, weights)``,
called on ranges of objects; CatBoost 1.x passes them as float64 NumPy arrays (``weights``
None without sample weights), so one fastloss ``NAME_grad_hess`` call serves a whole range.
Each factory returns a ``CatBoostObjective``: pass it as ``loss_function=`` and its
``metric`` as ``eval_metric=``::

    >>> from catboost import CatBoostRegressor
    >>> import fastloss.catboost as flc
    >>> obj = flc.poisson()
    >>> model = CatBoostRegressor(loss_function=obj, eval_metric=obj.metric, iterations=200)

Conventions. CatBoost maximises: the objective returns, per object, ``(der1, der2)`` =
``(-gradient, -Hessian)`` of the loss, as an ``(n, 2)`` float64 array; the gradient and
Hessian are those of ``fastloss.xgboost``'s objective of the same name (the same
``fastloss._boosting`` core, sample weights multiplied in), computed in float64 (the dtype
CatBoost hands over). ``poisson`` uses the exact Hessian ``exp(x)`` (CatBoost's built-in
``Poisson``; XGBoost's ``max_delta_step`` does not apply). The predictions a custom
objective's model gives are raw scores (``prediction_type="RawFormulaVal"``); the model starts
from 0 unless ``boost_from_average`` applies (CatBoost does not apply it to a custom objective).

Only elementwise objectives: CatBoost's multiclass protocol (``calc_ders_multi``) is called
once per object with Python lists, which no vectorised kernel can serve, so there is no
``softmax`` here (use CatBoost's ``MultiClass``).

CatBoost is imported when a factory is called; without it the factories raise
ImportError: ``pip install 'fastloss[catboost]'``.
"""

from __future__ import annotations

import math

import numpy as np

from . import _boosting

__all__ = [
    "CatBoostMetric",
    "CatBoostObjective",
    "absolute_error",
    "focal",
    "gamma",
    "huber",
    "log_cosh",
    "logistic",
    "poisson",
    "pseudo_huber",
    "quantile",
    "squared_error",
    "tweedie",
]

_F64 = np.dtype(np.float64)



def _float64(values, name):
    a = np.asarray(values)
    if a.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional (one value per object), got shape {a.shape}")
    return a if a.dtype == _F64 and a.flags.c_contiguous else np.ascontiguousarray(a, dtype=_F64)


class CatBoostMetric:
    """The objective's loss as a CatBoost ``eval_metric``: the weighted mean of the metric loss
    at the raw scores (lower is better)."""

    def __init__(self, core, name):
        self._core = core
        self.name = name

    def __repr__(self):
        return f"<fastloss.catboost metric {self.name!r}>"

    def is_max_optimal(self):
        return False

    def evaluate(self, approxes, target, weight):
        """``(weighted sum of the loss, sum of the weights)`` of one range of objects
        (``approxes``: one container per dimension, a single one here)."""
        if len(approxes) != 1:
            raise ValueError(f"fastloss.catboost metrics take one approx dimension, got {len(approxes)}")
        x = _float64(approxes[0], "approxes")
        y = _float64(target, "target")
        w = None if weight is None or np.size(weight) == 0 else _float64(weight, "weight")
        total_weight = float(x.size) if w is None else math.fsum(w)
        if x.size == 0:
            return 0.0, 0.0
        return self._core.metric(x, y, w) * total_weight, total_weight

    def get_final_error(self, error, weight):
        return error / weight if weight else math.nan


class CatBoostObjective:
    """A fastloss objective in CatBoost's conventions (see the module docstring):
    ``calc_ders_range`` for ``loss_function=``, ``metric`` for ``eval_metric=``."""

    def __init__(self, core, name: str):
        self._core = core
        self.name = name
        self.metric = CatBoostMetric(core, name)

    def __repr__(self):
        return f"<fastloss.catboost objective {self.name!r}>"

    def __reduce__(self):  # copies and pickles: the configuration, not the buffers
        return (type(self), (self._core.fresh(), self.name))

    def calc_ders_range(self, approxes, targets, weights):
        """``(n, 2)`` float64: ``-gradient`` and ``-Hessian`` of the loss per object."""
        x = _float64(approxes, "approxes")
        y = _float64(targets, "targets")
        if y.size != x.size:
            raise ValueError(f"got {y.size} targets for {x.size} approxes")
        w = None if weights is None or np.size(weights) == 0 else _float64(weights, "weights")
        grad, hess = self._core.grad_hess(x, y, w)
        ders = np.empty((x.size, 2), _F64)
        np.negative(grad, out=ders[:, 0])
        np.negative(hess, out=ders[:, 1])
        return ders


def _make(spec, n_threads):
    _boosting.require("catboost")
    return CatBoostObjective(_boosting.ElementwiseObjective(spec, n_threads), spec.metric_name)


def squared_error(*, n_threads=None) -> CatBoostObjective:
    """``RMSE``'s derivatives: ``der1 = w (y - x)``, ``der2 = -w``. Metric ``mse``."""
    return _make(_boosting.squared_error(), n_threads)


def absolute_error(*, hessian=1.0, n_threads=None) -> CatBoostObjective:
    """Absolute error (``l1_loss``): ``der1 = -w sign(x - y)``, ``der2 = -w * hessian``.
    CatBoost's ``MAE`` sets leaf values to medians (``leaf_estimation_method="Exact"``), which
    a derivative objective cannot. Metric ``mae``."""
    return _make(_boosting.absolute_error(hessian), n_threads)


def huber(delta=1.0, *, hessian=1.0, n_threads=None) -> CatBoostObjective:
    """Huber loss (``huber_loss``): ``der1 = -w clip(x - y, -delta, delta)``,
    ``der2 = -w`` (the constant policy; ``hessian="exact"``: 1 inside ``|r| < delta``, 0
    outside, as CatBoost's ``Huber``). Metric ``huber``."""
    return _make(_boosting.huber(delta, hessian), n_threads)


def logistic(*, scale_pos_weight=None, n_threads=None) -> CatBoostObjective:
    """``Logloss`` on the raw score: ``der1 = w (y - p)``, ``der2 = -w p (1 - p)``,
    ``p = sigmoid(x)``; ``scale_pos_weight`` multiplies the positive labels' weight. Metric
    ``logloss``."""
    return _make(_boosting.logistic(scale_pos_weight), n_threads)


def poisson(*, n_threads=None) -> CatBoostObjective:
    """``Poisson`` (log link): ``der1 = w (y - exp(x))``, ``der2 = -w exp(x)``. Metric
    ``poisson_deviance``."""
    return _make(_boosting.poisson(0.0), n_threads)


def gamma(*, n_threads=None) -> CatBoostObjective:
    """Gamma deviance on the log link: ``der1 = -w (1 - y exp(-x))``, ``der2 = -w y exp(-x)``.
    Metric ``gamma_deviance``."""
    return _make(_boosting.gamma(), n_threads)


def tweedie(variance_power=1.5, *, n_threads=None) -> CatBoostObjective:
    """``Tweedie:variance_power=p`` (log link), the Tweedie deviance's derivatives. Metric
    ``tweedie_deviance@p``."""
    return _make(_boosting.tweedie(variance_power), n_threads)


def quantile(alpha=0.5, *, hessian=1.0, n_threads=None) -> CatBoostObjective:
    """Quantile (pinball) loss at ``alpha``, Hessian ``w * hessian`` (CatBoost's ``Quantile``
    sets exact leaf quantiles instead). Metric ``pinball@alpha``."""
    return _make(_boosting.quantile(alpha, hessian), n_threads)


def focal(alpha=0.25, gamma=2.0, *, min_hessian=1e-6, n_threads=None) -> CatBoostObjective:
    """Sigmoid focal loss (torchvision's ``alpha`` and ``gamma``) on the raw score, the
    unweighted Hessian floored at ``min_hessian`` (see ``fastloss.xgboost.focal``). Metric
    ``focal``."""
    return _make(_boosting.focal(alpha, gamma, min_hessian), n_threads)


def log_cosh(*, n_threads=None) -> CatBoostObjective:
    """Log-cosh loss: ``der1 = -w tanh(x - y)``, ``der2 = -w (1 - tanh(x - y)^2)``. Metric
    ``log_cosh``."""
    return _make(_boosting.log_cosh(), n_threads)


def pseudo_huber(delta=1.0, *, n_threads=None) -> CatBoostObjective:
    """Pseudo-Huber loss (``pseudo_huber_loss``): ``der1 = -w r / sqrt(1 + (r / delta)^2)``,
    ``der2 = -w (1 + (r / delta)^2)^(-3/2)``, ``r = x - y`` (no built-in counterpart: CatBoost's
    ``Huber`` is the Huber loss). Metric ``pseudo_huber``."""
    return _make(_boosting.pseudo_huber(delta), n_threads)
