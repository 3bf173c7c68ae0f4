"""Registry facts shared by the framework adapters (``fastloss.torch``, ``fastloss.jax``).

Pure Python on the registry alone: importing this module imports neither PyTorch nor JAX,
so each adapter derives the same facts from the same rows."""

from __future__ import annotations

import inspect
import re

from ._registry import Loss


def tensor_params(spec: Loss) -> list[str]:
    """The array parameters of the loss, in the registry's keyword order: weight,
    pos_weight, quantile (a number or an array; the adapters pass it as an array operand
    when it is one)."""
    return [name for name in ("weight", "pos_weight", "quantile")
            if name == "weight" and spec.weight or name == "pos_weight" and spec.pos_weight
            or name == "quantile" and spec.quantile]


def residual_sign(spec: Loss) -> int:
    """-1 when the loss depends on input and target only through their difference (the
    registry formula, with ``x - y`` or ``y - x`` written as one residual, names neither
    ``x`` nor ``y`` anywhere else): the target's gradient is then minus the input's,
    exactly. 0 for every other loss (no target gradient)."""
    if spec.kind != "elementwise":
        return 0
    rest = spec.formula.replace("x - y", "r").replace("y - x", "r")
    if rest == spec.formula or re.search(r"\b[xy]\b", rest):
        return 0
    return -1


def numpy_signature(spec: Loss) -> inspect.Signature:
    """The NumPy API's signature without ``n_threads``: keywords after ``target``."""
    P = inspect.Parameter
    params = [P("input", P.POSITIONAL_OR_KEYWORD), P("target", P.POSITIONAL_OR_KEYWORD)]
    params += [P(name, P.KEYWORD_ONLY, default=default) for name, _, default in spec.keywords()]
    params.append(P("reduction", P.KEYWORD_ONLY, default="mean"))
    return inspect.Signature(params)
