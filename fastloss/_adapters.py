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


def generate_function(name: str, sig: inspect.Signature, body: str, namespace: dict, module: str, doc: str):
    """The adapters' public function ``name``: a plain function with the signature ``sig``
    (its defaults and keyword-only marker included) that returns ``body``, an expression over
    its parameters and ``namespace``. Compiled from source, so ``inspect.signature`` shows the
    real parameters and a call costs what a plain function's does (no ``*args`` wrapper)."""
    defaults, parts, star = {}, [], False
    for p in sig.parameters.values():
        if p.kind is inspect.Parameter.KEYWORD_ONLY and not star:
            parts.append("*")
            star = True
        if p.default is inspect.Parameter.empty:
            parts.append(p.name)
        else:
            defaults[p.name] = p.default
            parts.append(f"{p.name}=_defaults[{p.name!r}]")
    src = f"def {name}({', '.join(parts)}):\n    return {body}\n"
    namespace = {**namespace, "_defaults": defaults}
    exec(compile(src, f"<{module} generated {name}>", "exec"), namespace)
    fn = namespace[name]
    fn.__module__, fn.__qualname__, fn.__doc__ = module, name, doc
    fn.__source__ = src
    return fn
