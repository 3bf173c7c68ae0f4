"""Custom LightGBM objectives and metrics computed by fastloss.

Each factory returns an ``LGBMObjective``: the object itself is the native objective
(``lgb.train({"objective": objective, ...}, train_set)``: ``objective(preds, train_data) ->
(grad, hess)``, LightGBM 4), ``objective.metric`` the matching ``feval``, and
``objective.sklearn_objective`` / ``objective.sklearn_metric`` the scikit-learn-style pair
for ``LGBMRegressor(objective=...)`` and ``fit(eval_metric=...)``
(``f(y_true, y_pred, weight)``)::

    >>> import lightgbm as lgb
    >>> import fastloss.lightgbm as fll
    >>> obj = fll.huber(delta=1.0)
    >>> booster = lgb.train({"objective": obj, "metric": "None"}, train_set, num_boost_round=100,
    ...                     valid_sets=[valid_set], feval=obj.metric)

Gradient and Hessian are those of LightGBM's built-in objective of the same name, sample
weights (``Dataset(weight=...)``) included, so the booster's parameters mean the same: with
the same starting score the model is the built-in one's to float32 rounding, except where
the built-in objective refits its leaves after growing each tree (``l1``, ``quantile``: a
gradient/Hessian objective cannot). The starting score: a custom objective starts from 0
(or the Dataset's ``init_score``), the built-in ones from the label average unless
``boost_from_average=False``.

Predictions. LightGBM hands the objective float64 scores; they are converted once per round
into a reused float32 buffer, fastloss computes in float32 into reused float32 gradient and
Hessian buffers, which LightGBM takes without a copy. Multiclass scores are class-major
(LightGBM 4 passes them as an (n, K) Fortran-ordered view of its K blocks of n scores, older
versions as the flat vector): they are converted into a (K, n) float32 buffer, and
``cross_entropy`` computes on that layout as it is (its (N, C, d) form with N = 1), into
(K, n) gradient and Hessian buffers returned in the layout the scores came in (an (n, K)
view LightGBM flattens without a copy, or the flat vector). No transpose anywhere.

``lgb.train`` deep-copies its params, and the objective with them: the training runs on a
copy with buffers of its own (a copy or a pickle of an objective is the same objective
without buffers), so ``objective.buffers`` of the object you hold stays empty.

Metrics receive raw scores (LightGBM passes them when the objective is custom) and return
``(name, weighted mean loss, False)``. LightGBM is imported when a factory is called;
without it the factories raise ImportError: ``pip install 'fastloss[lightgbm]'``.
"""

from __future__ import annotations

import numpy as np

from . import _boosting

__all__ = [
    "LGBMObjective",
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



class LGBMObjective:
    """A fastloss objective in LightGBM's conventions (see the module docstring).

    Calling it is the native objective ``(preds, train_data) -> (grad, hess)``; ``metric``
    is the native ``feval`` ``(preds, eval_data) -> (name, value, False)``;
    ``sklearn_objective`` and ``sklearn_metric`` the scikit-learn-style ``(y_true, y_pred,
    weight)`` forms. ``name`` is the metric's name; ``buffers`` the (grad, hess) arrays
    reused by every round (for multiclass: class-major, (K, n))."""

    def __init__(self, core, name: str, *, num_class: int | None = None):
        self._core = core
        self.name = name
        self.num_class = num_class
        self._multiclass = isinstance(core, _boosting.SoftmaxObjective)
        self._preds = None      # float32 scores: (n,), or (K, n) class-major

    def __repr__(self):
        return f"<fastloss.lightgbm objective {self.name!r}>"

    def __reduce__(self):
        # lgb.train deep-copies its params, the objective with them: a copy (or a pickle)
        # is the same objective with buffers of its own, allocated at its first call.
        return (type(self), (self._core.fresh(), self.name), {"num_class": self.num_class})

    def __setstate__(self, state):
        self.num_class = state["num_class"]

    @property
    def buffers(self):
        return self._core.buffers

    def _class_major(self, preds, n):
        """Multiclass scores as a (K, n) class-major view (no copy of LightGBM's layouts) and
        whether they came as the flat vector."""
        preds = np.asarray(preds)
        if preds.ndim == 1:  # LightGBM < 4: K blocks of n scores
            k = self.num_class or (preds.size // n if n else 0)
            if n * k != preds.size:
                raise ValueError(f"got {preds.size} multiclass scores for {n} samples")
            return preds.reshape(k, n), True
        if preds.ndim != 2 or preds.shape[0] != n:
            raise ValueError(f"got multiclass scores of shape {preds.shape} for {n} samples")
        if self.num_class is not None and preds.shape[1] != self.num_class:
            raise ValueError(f"got scores of shape {preds.shape} for num_class={self.num_class}")
        return preds.T, False

    def _scores(self, preds, n):
        """float32 scores in a reused buffer: (n,) or, for multiclass, (K, n) class-major.
        Returns them and whether multiclass scores came as the flat vector."""
        flat = False
        if self._multiclass:
            preds, flat = self._class_major(preds, n)
        else:
            preds = np.asarray(preds)
        if preds.dtype == _F32 and preds.flags.c_contiguous:
            return preds, flat
        if self._preds is None or self._preds.shape != preds.shape:
            self._preds = np.empty(preds.shape, _F32)
        np.copyto(self._preds, preds, casting="same_kind")
        return self._preds, flat

    def _grad_hess(self, label, preds, weight):
        y = np.asarray(label)
        scores, flat = self._scores(preds, y.shape[0] if y.ndim else 1)
        if not self._multiclass:
            return self._core.grad_hess(scores, y, weight)
        gcm, hcm = self._core.grad_hess(scores, y, weight, class_major=True)  # (K, n)
        if flat:
            return gcm.reshape(-1), hcm.reshape(-1)
        return gcm.T, hcm.T  # (n, K), Fortran order: LightGBM's ravel(order="F") is a view

    def __call__(self, preds, train_data):
        return self._grad_hess(train_data.get_label(), preds, train_data.get_weight())

    def sklearn_objective(self, y_true, y_pred, weight):
        """The objective in LightGBM's scikit-learn form (``LGBMRegressor(objective=...)``):
        LightGBM passes ``weight`` (None without sample weights) to a three-argument objective."""
        return self._grad_hess(y_true, y_pred, weight)

    def _metric_value(self, label, preds, weight):
        y = np.asarray(label)
        if self._multiclass:
            return self._core.metric(self._class_major(preds, y.shape[0])[0], y, weight, class_major=True)
        return self._core.metric(np.asarray(preds), y, weight)

    def metric(self, preds, eval_data):
        """``feval`` for ``lgb.train``: ``(name, weighted mean loss, False)`` at the raw scores."""
        return self.name, self._metric_value(eval_data.get_label(), preds, eval_data.get_weight()), False

    def sklearn_metric(self, y_true, y_pred, weight):
        """``eval_metric`` for the scikit-learn API: ``(name, weighted mean loss, False)``."""
        return self.name, self._metric_value(y_true, y_pred, weight), False


def _make(spec, n_threads):
    _boosting.require("lightgbm")
    return LGBMObjective(_boosting.ElementwiseObjective(spec, n_threads), spec.metric_name)


def squared_error(*, n_threads=None) -> LGBMObjective:
    """``regression`` (L2): gradient ``w (x - y)``, Hessian ``w`` (``mse_loss`` with weight
    ``w / 2``). Metric ``mse`` (LightGBM's ``l2``)."""
    return _make(_boosting.squared_error(), n_threads)


def absolute_error(*, hessian=1.0, n_threads=None) -> LGBMObjective:
    """Absolute error: gradient ``w sign(x - y)``, Hessian ``w * hessian`` (``l1_loss``;
    ``hessian="exact"`` gives the true 0, which stalls the booster). LightGBM's ``l1`` grows
    its trees from the same gradient and Hessian, then sets each leaf to the weighted median
    of its residuals, which no gradient/Hessian objective can express: the splits of the
    first tree agree, the leaf values (and later trees) do not. Metric ``mae``."""
    return _make(_boosting.absolute_error(hessian), n_threads)


def huber(delta=1.0, *, hessian=1.0, n_threads=None) -> LGBMObjective:
    """``huber`` with ``alpha=delta``: gradient ``w clip(x - y, -delta, delta)``, Hessian
    ``w`` (``huber_loss`` with the constant Hessian policy, which is LightGBM's;
    ``hessian="exact"``: 1 inside ``|r| < delta``, 0 outside). Metric ``huber``."""
    return _make(_boosting.huber(delta, hessian), n_threads)


def logistic(*, scale_pos_weight=None, n_threads=None) -> LGBMObjective:
    """``binary`` (``sigmoid=1``) on the raw score: gradient ``w (sigmoid(x) - y)``, Hessian
    ``w sigmoid(x) (1 - sigmoid(x))`` (``binary_cross_entropy_with_logits``);
    ``scale_pos_weight`` multiplies the weight of the positive labels as LightGBM's does.
    Metric ``logloss``, without ``scale_pos_weight`` (LightGBM's ``binary_logloss``)."""
    return _make(_boosting.logistic(scale_pos_weight), n_threads)


def softmax(num_class=None, *, class_weight=None, hess_scale=None, n_threads=None) -> LGBMObjective:
    """``multiclass`` on (n, K) scores: gradient ``w (p_c - [c = y])``, Hessian
    ``hess_scale * w p_c (1 - p_c)`` (``cross_entropy``). LightGBM's built-in uses
    ``K / (K - 1)``, the default (None); 1.0 is the exact diagonal. ``class_weight`` (K,) is
    cross_entropy's class weight. Sample weights multiply the rows of gradient and Hessian
    in place (cross_entropy has class weights only: one extra pass over each). Pass
    ``num_class`` in the params as for the built-in. Metric ``mlogloss``."""
    _boosting.require("lightgbm")
    core = _boosting.SoftmaxObjective(class_weight=class_weight, hess_scale=hess_scale, n_threads=n_threads)
    return LGBMObjective(core, "mlogloss", num_class=None if num_class is None else int(num_class))


def poisson(*, max_delta_step=0.7, n_threads=None) -> LGBMObjective:
    """``poisson`` (log link): gradient ``w (exp(x) - y)``, Hessian ``w exp(x +
    max_delta_step)`` (``poisson_nll_loss``'s, which are half the Poisson deviance's, Hessian
    times ``exp(max_delta_step)``; 0.7 is LightGBM's ``poisson_max_delta_step``, 0 the exact
    Hessian). Metric ``poisson_deviance``, the mean unit deviance."""
    return _make(_boosting.poisson(max_delta_step), n_threads)


def gamma(*, n_threads=None) -> LGBMObjective:
    """``gamma`` (log link): gradient ``w (1 - y exp(-x))``, Hessian ``w y exp(-x)``
    (``gamma_deviance`` with weight ``w / 2``). Metric ``gamma_deviance``."""
    return _make(_boosting.gamma(), n_threads)


def tweedie(variance_power=1.5, *, n_threads=None) -> LGBMObjective:
    """``tweedie`` (log link, ``tweedie_variance_power``): gradient
    ``w (exp((2-p) x) - y exp((1-p) x))``, Hessian ``w ((2-p) exp((2-p) x) - (1-p) y
    exp((1-p) x))`` (``tweedie_deviance`` with weight ``w / 2``). Metric
    ``tweedie_deviance@p``."""
    return _make(_boosting.tweedie(variance_power), n_threads)


def quantile(alpha=0.5, *, hessian=1.0, n_threads=None) -> LGBMObjective:
    """Quantile (pinball) loss at ``alpha``: gradient ``w (1 - alpha)`` where ``x > y``,
    ``-w alpha`` where ``x < y``, Hessian ``w * hessian`` (``pinball_loss``). LightGBM's
    ``quantile`` refits its leaves to the residuals' quantile after growing each tree, which
    a gradient/Hessian objective cannot: splits agree, leaf values do not. Metric
    ``pinball@alpha``."""
    return _make(_boosting.quantile(alpha, hessian), n_threads)


def focal(alpha=0.25, gamma=2.0, *, min_hessian=1e-6, n_threads=None) -> LGBMObjective:
    """Sigmoid focal loss (``sigmoid_focal_loss``, torchvision's ``alpha`` and ``gamma``) on
    the raw score; no built-in counterpart. Its exact second derivative is negative where a
    prediction is confidently wrong; the unweighted Hessian is floored at ``min_hessian``
    (None: the exact value). Sample weights multiply gradient and Hessian (one extra pass:
    the loss has no weight keyword). Metric ``focal``."""
    return _make(_boosting.focal(alpha, gamma, min_hessian), n_threads)


def log_cosh(*, n_threads=None) -> LGBMObjective:
    """Log-cosh loss (``log_cosh_loss``): gradient ``w tanh(x - y)``, Hessian
    ``w (1 - tanh(x - y)^2)``; no built-in counterpart. The Hessian vanishes for large
    residuals: start near the target (``init_score``) and keep its scale near 1. Metric
    ``log_cosh``."""
    return _make(_boosting.log_cosh(), n_threads)


def pseudo_huber(delta=1.0, *, n_threads=None) -> LGBMObjective:
    """Pseudo-Huber loss (``pseudo_huber_loss``): gradient ``w r / sqrt(1 + (r / delta)^2)``,
    Hessian ``w (1 + (r / delta)^2)^(-3/2)`` (exact, always positive), ``r = x - y``; no
    built-in counterpart (LightGBM's ``huber`` is the Huber loss: ``huber``). The Hessian
    vanishes for residuals large against ``delta``: start near the target (``init_score``).
    Metric ``pseudo_huber``."""
    return _make(_boosting.pseudo_huber(delta), n_threads)
