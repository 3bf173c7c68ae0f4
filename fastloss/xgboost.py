"""Custom XGBoost objectives and metrics computed by fastloss.

Each factory returns an ``XGBObjective``: the object itself is the native objective
(``xgb.train(params, dtrain, obj=objective)``: ``objective(preds, dtrain) -> (grad, hess)``),
``objective.metric`` the matching ``custom_metric``, and ``objective.sklearn_objective`` /
``objective.sklearn_metric`` the scikit-learn-style pair for ``XGBRegressor(objective=...,
eval_metric=...)`` (``f(y_true, y_pred, sample_weight=None)``, XGBoost >= 2)::

    >>> import xgboost as xgb
    >>> import fastloss.xgboost as flx
    >>> obj = flx.logistic(scale_pos_weight=3.0)
    >>> booster = xgb.train({"base_score": 0.0, "disable_default_eval_metric": True}, dtrain,
    ...                     num_boost_round=100, obj=obj, custom_metric=obj.metric,
    ...                     evals=[(dvalid, "valid")])

Gradient and Hessian are those of XGBoost's built-in objective of the same name, sample
weights (``DMatrix(weight=...)``) included, so the booster's parameters mean the same: with
the same starting margin the model is the built-in one's to float32 rounding, except where
the built-in objective refits its leaves after growing each tree (absolute error,
quantile: a gradient/Hessian objective cannot, see ``absolute_error``). The starting margin:
a custom objective starts from ``base_score`` taken as a raw margin (``0.5`` by default is
*not* the built-in logistic's starting point, which is ``logit(0.5) = 0``); pass
``base_score`` on the margin scale, or set ``base_margin`` on the DMatrix.

Metrics receive the raw margins (XGBoost passes margins to ``custom_metric`` when ``obj`` is
a custom objective) and return the weighted mean of the loss (``sum(w l) / sum(w)``).

The gradient and Hessian are float32 arrays allocated on the first round and reused on every
round (XGBoost copies them at once). ``n_threads`` is fastloss's thread count (default: as
``fastloss.get_num_threads()``). XGBoost is imported when a factory is called; without it the
factories raise ImportError: ``pip install 'fastloss[xgboost]'``.
"""

from __future__ import annotations

import numpy as np

from . import _boosting

__all__ = [
    "XGBObjective",
    "absolute_error",
    "focal",
    "gamma",
    "huber",
    "log_cosh",
    "logistic",
    "poisson",
    "pseudo_huber",
    "quantile",
    "softmax",
    "squared_error",
    "tweedie",
]

_F32 = np.dtype(np.float32)



class XGBObjective:
    """A fastloss objective in XGBoost's conventions (see the module docstring).

    Calling it is the native objective ``(preds, dtrain) -> (grad, hess)``; ``metric`` is the
    native ``custom_metric`` ``(preds, dtrain) -> (name, value)``; ``sklearn_objective``
    and ``sklearn_metric`` are the scikit-learn-style ``(y_true, y_pred, sample_weight=None)``
    forms. ``name`` is the metric's name; ``buffers`` the (grad, hess) arrays reused by every
    round (None before the first)."""

    def __init__(self, core, name: str, *, num_class: int | None = None):
        self._core = core
        self.name = name
        self.num_class = num_class
        self._preds = None
        metric = self._sklearn_metric
        # XGBoost's scikit-learn wrapper names a callable eval_metric by its __name__.

        def sklearn_metric(y_true, y_pred, sample_weight=None):
            return metric(y_true, y_pred, sample_weight)

        sklearn_metric.__name__ = sklearn_metric.__qualname__ = name
        sklearn_metric.__doc__ = f"The {name} metric in XGBoost's scikit-learn form: (y_true, y_pred, sample_weight=None) -> float."
        self.sklearn_metric = sklearn_metric

    def __repr__(self):
        return f"<fastloss.xgboost objective {self.name!r}>"

    def __reduce__(self):
        # A copy (scikit-learn's clone deep-copies the estimator's objective) or a pickle is
        # the same objective with buffers of its own, allocated at its first call.
        return (type(self), (self._core.fresh(), self.name), {"num_class": self.num_class})

    def __setstate__(self, state):
        self.num_class = state["num_class"]

    @property
    def buffers(self):
        return self._core.buffers

    def _margins(self, preds, n):
        """The margins as float32 (XGBoost gives float32: used as they are), (n, K) for a
        multiclass objective (XGBoost >= 2 passes (n, K); a flat vector is taken as row-major)."""
        preds = np.asarray(preds)
        if self.num_class is not None or isinstance(self._core, _boosting.SoftmaxObjective):
            if preds.ndim == 1:
                k = self.num_class or (preds.size // n if n else 0)
                if n * k != preds.size:
                    raise ValueError(f"got {preds.size} multiclass margins for {n} samples")
                preds = preds.reshape(n, k)
            elif self.num_class is not None and preds.shape[1] != self.num_class:
                raise ValueError(f"got margins of shape {preds.shape} for num_class={self.num_class}")
        if preds.dtype != _F32 or not preds.flags.c_contiguous:
            if self._preds is None or self._preds.shape != preds.shape:
                self._preds = np.empty(preds.shape, _F32)
            np.copyto(self._preds, preds, casting="same_kind")
            preds = self._preds
        return preds

    def _grad_hess(self, y_true, y_pred, sample_weight):
        y = np.asarray(y_true)
        preds = self._margins(y_pred, y.shape[0] if y.ndim else 1)
        return self._core.grad_hess(preds, y, sample_weight)

    def __call__(self, preds, dtrain):
        return self._grad_hess(dtrain.get_label(), preds, dtrain.get_weight())

    def sklearn_objective(self, y_true, y_pred, sample_weight=None):
        """The objective in XGBoost's scikit-learn form (``XGBRegressor(objective=...)``)."""
        return self._grad_hess(y_true, y_pred, sample_weight)

    def _sklearn_metric(self, y_true, y_pred, sample_weight=None):
        y = np.asarray(y_true)
        preds = np.asarray(y_pred)
        if isinstance(self._core, _boosting.SoftmaxObjective) and preds.ndim == 1:
            preds = preds.reshape(y.shape[0], -1)
        return self._core.metric(preds, y, sample_weight)

    def metric(self, preds, dmatrix):
        """``custom_metric`` for ``xgb.train``: ``(name, weighted mean loss)`` at the raw margins."""
        return self.name, self._sklearn_metric(dmatrix.get_label(), preds, dmatrix.get_weight())


def _make(spec, n_threads):
    _boosting.require("xgboost")
    return XGBObjective(_boosting.ElementwiseObjective(spec, n_threads), spec.metric_name)


def squared_error(*, n_threads=None) -> XGBObjective:
    """``reg:squarederror``: gradient ``w (x - y)``, Hessian ``w`` (``mse_loss`` with weight
    ``w / 2``); metric ``mse``, the weighted mean of ``(x - y)^2``."""
    return _make(_boosting.squared_error(), n_threads)


def absolute_error(*, hessian=1.0, n_threads=None) -> XGBObjective:
    """Absolute error: gradient ``w sign(x - y)``, Hessian ``w * hessian`` (``l1_loss``, whose
    exact second derivative is 0: ``hessian="exact"`` gives it, and stalls the booster).
    ``reg:absoluteerror`` grows its trees from the same gradient and Hessian but then sets each
    leaf to the weighted median of its residuals, which no gradient/Hessian objective can
    express: the splits of the first tree agree, the leaf values (and later trees) do not.
    Metric ``mae``."""
    return _make(_boosting.absolute_error(hessian), n_threads)


def huber(delta=1.0, *, hessian=1.0, n_threads=None) -> XGBObjective:
    """Huber loss (``huber_loss``): gradient ``w clip(x - y, -delta, delta)``, Hessian ``w``
    (the constant policy, as LightGBM's huber; ``hessian="exact"``: 1 inside ``|r| < delta``,
    0 outside). XGBoost has no built-in Huber objective (its ``reg:pseudohubererror`` is the
    pseudo-Huber loss: ``pseudo_huber``). Metric ``huber``."""
    return _make(_boosting.huber(delta, hessian), n_threads)


def logistic(*, scale_pos_weight=None, n_threads=None) -> XGBObjective:
    """``binary:logistic`` on the margin: gradient ``w (sigmoid(x) - y)``, Hessian
    ``w sigmoid(x) (1 - sigmoid(x))`` (``binary_cross_entropy_with_logits``);
    ``scale_pos_weight`` multiplies the weight of the positive labels as XGBoost's does
    (fastloss's ``pos_weight``; for labels in {0, 1}). Metric ``logloss``, without
    ``scale_pos_weight`` (as XGBoost's logloss)."""
    return _make(_boosting.logistic(scale_pos_weight), n_threads)


def softmax(num_class=None, *, class_weight=None, hess_scale=2.0, n_threads=None) -> XGBObjective:
    """``multi:softprob`` on (n, K) margins: gradient ``w (p_c - [c = y])``, Hessian
    ``hess_scale * w p_c (1 - p_c)`` (``cross_entropy``; XGBoost's built-in uses
    ``hess_scale=2``, the default; 1.0 is the exact diagonal). ``class_weight`` (K,) is
    cross_entropy's class weight. Sample weights multiply the rows of gradient and Hessian
    in place (cross_entropy has class weights only: one extra pass over each). Labels are
    class indices stored as floats. Metric ``mlogloss``."""
    _boosting.require("xgboost")
    core = _boosting.SoftmaxObjective(class_weight=class_weight, hess_scale=hess_scale, n_threads=n_threads)
    return XGBObjective(core, "mlogloss", num_class=None if num_class is None else int(num_class))


def poisson(*, max_delta_step=0.7, n_threads=None) -> XGBObjective:
    """``count:poisson`` (log link): gradient ``w (exp(x) - y)``, Hessian
    ``w exp(x + max_delta_step)`` (``poisson_nll_loss``'s, which are half the Poisson
    deviance's, Hessian times ``exp(max_delta_step)``; 0.7 is XGBoost's default, 0 the exact
    Hessian). XGBoost also caps
    the leaf values with ``max_delta_step`` (0.7) when the built-in objective is
    ``count:poisson``: to reproduce it, pass ``max_delta_step=0.7`` in the booster's params
    too. Metric ``poisson_deviance``, the mean unit deviance ``2 (y log(y / mu) - y + mu)``."""
    return _make(_boosting.poisson(max_delta_step), n_threads)


def gamma(*, n_threads=None) -> XGBObjective:
    """``reg:gamma`` (log link): gradient ``w (1 - y exp(-x))``, Hessian ``w y exp(-x)``
    (``gamma_deviance`` with weight ``w / 2``). Metric ``gamma_deviance``, the mean unit
    deviance ``2 (log(mu / y) + y / mu - 1)``."""
    return _make(_boosting.gamma(), n_threads)


def tweedie(variance_power=1.5, *, n_threads=None) -> XGBObjective:
    """``reg:tweedie`` (log link, ``tweedie_variance_power``): gradient
    ``w (exp((2-p) x) - y exp((1-p) x))``, Hessian ``w ((2-p) exp((2-p) x) - (1-p) y
    exp((1-p) x))`` (``tweedie_deviance`` with weight ``w / 2``). Metric
    ``tweedie_deviance@p``, the mean unit deviance."""
    return _make(_boosting.tweedie(variance_power), n_threads)


def quantile(alpha=0.5, *, hessian=1.0, n_threads=None) -> XGBObjective:
    """Quantile (pinball) loss at ``alpha``: gradient ``w (1 - alpha)`` where ``x > y``,
    ``-w alpha`` where ``x < y``, Hessian ``w * hessian`` (``pinball_loss``, constant policy).
    ``reg:quantileerror`` refits its leaves to the residuals' quantile after growing each
    tree, which a gradient/Hessian objective cannot: splits agree, leaf values do not (as
    ``absolute_error``). Metric ``pinball@alpha``."""
    return _make(_boosting.quantile(alpha, hessian), n_threads)


def focal(alpha=0.25, gamma=2.0, *, min_hessian=1e-6, n_threads=None) -> XGBObjective:
    """Sigmoid focal loss (``sigmoid_focal_loss``, torchvision's ``alpha`` and ``gamma``;
    ``alpha < 0``: no class weighting) on the margin. No built-in counterpart. Its exact
    second derivative is negative where a prediction is confidently wrong (for gamma=2,
    beyond a margin of about 2.8 on the wrong side); a booster needs a positive Hessian, so
    the unweighted Hessian is floored at ``min_hessian`` (None: the exact value). Sample
    weights multiply gradient and Hessian (one extra pass: the loss has no weight
    keyword). Metric ``focal``."""
    return _make(_boosting.focal(alpha, gamma, min_hessian), n_threads)


def log_cosh(*, n_threads=None) -> XGBObjective:
    """Log-cosh loss (``log_cosh_loss``): gradient ``w tanh(x - y)``, Hessian
    ``w (1 - tanh(x - y)^2)``. No built-in counterpart. The Hessian vanishes for large
    residuals, so start near the target (``base_score``) and keep the target's scale near 1.
    Metric ``log_cosh``."""
    return _make(_boosting.log_cosh(), n_threads)


def pseudo_huber(delta=1.0, *, n_threads=None) -> XGBObjective:
    """Pseudo-Huber loss (``pseudo_huber_loss``): gradient ``w r / sqrt(1 + (r / delta)^2)``,
    Hessian ``w (1 + (r / delta)^2)^(-3/2)`` (exact, always positive), ``r = x - y``; XGBoost's
    ``reg:pseudohubererror`` with ``huber_slope=delta``. The Hessian vanishes for residuals
    large against ``delta``: start near the target (``base_score``; the built-in estimates
    it unless given). Metric ``pseudo_huber`` (XGBoost's ``mphe``)."""
    return _make(_boosting.pseudo_huber(delta), n_threads)
