"""fastloss for JAX: every loss of the registry usable inside ``jax.jit``, ``jax.grad`` and ``jax.vmap``.

    >>> import fastloss.jax as flj
    >>> loss, grads = jax.value_and_grad(lambda w: flj.cross_entropy(X @ w, labels))(w)

For every loss ``NAME`` of ``fastloss._registry`` (generated from the registry at import: a
new row gets its function with no code here), ``flj.NAME(input, target, ...)`` takes JAX
arrays (or anything ``jnp.asarray`` takes) and returns a JAX array:

- signature: the NumPy API's, ``fastloss.NAME(input, target, *, <parameters>, reduction)``
  without ``n_threads`` (the thread count is ``fastloss.set_num_threads``'s).
- one ``jax.custom_vjp`` per static signature over the fused kernel: the forward pass is one
  callback of ``fastloss.NAME_grad`` returning the loss and the gradient together; the
  backward pass is the saved gradient times the cotangent (per element for "none" of
  elementwise losses, per sample for "none" of class losses), nothing recomputed. Without
  differentiation (a plain ``jax.jit``) the callback is ``fastloss.NAME`` alone. Outside
  every transformation (concrete arrays, no tracer) the call is fastloss itself on zero-copy
  NumPy views of the arrays, with no callback.
- the callback: ``jax.experimental.buffer_callback`` where JAX has it (experimental; in jax 0.10.2):
  fastloss reads XLA's input buffers in place and writes the gradient into XLA's output
  buffer (``out=``), no copies; ``jax.pure_callback`` otherwise (older JAX: the arguments
  are placed as CPU arrays and the results copied back). Same bits either way.
- transformations: ``jax.jit``, ``jax.grad`` / ``jax.vjp`` / ``value_and_grad`` (reverse
  mode), ``jax.vmap`` (the callback runs once per batch element: ``vmap_method="sequential"``,
  correct for every loss and reduction, not faster than a Python loop), and their
  compositions. Not supported: forward mode (``jax.jvp``, ``jax.jacfwd``, ``jax.hessian``:
  JAX's TypeError for a ``custom_vjp``) and second derivatives (``grad`` of ``grad``: a
  NotImplementedError naming the loss; ``fastloss.NAME_grad_hess`` gives the Hessian's
  diagonal).
- dtypes: the input must be a float array (float32, float64, float16 or bfloat16). For an
  elementwise loss with a float target the two are promoted (``jnp.promote_types``: float32
  input and float64 target compute in float64, as ``fastloss.torch``); float16 and bfloat16
  compute in float32 (an upcast in the graph, exact), the loss is float32 and the gradient
  comes back in the input's dtype (the float32 product of the saved gradient and the
  cotangent, rounded once). Class indices pass in their integer dtype (int32 unless
  ``jax_enable_x64``); float targets of elementwise losses, weights and array quantiles are
  cast to the compute dtype. float64 needs ``jax_enable_x64`` (JAX's own rule).
- target gradients: JAX differentiates with respect to what the caller asks. For the losses
  of the residual ``x - y`` alone (``residual_sign``: ``mse_loss``, ``l1_loss``,
  ``huber_loss``, ``smooth_l1_loss``, ``pinball_loss``, ``log_cosh_loss``,
  ``pseudo_huber_loss``) the target's cotangent is minus the input's, exactly. Differentiating
  any other loss with respect to its target, or any loss with respect to ``weight``,
  ``pos_weight`` or an array ``quantile``, is a NotImplementedError naming the argument at
  trace time, never a silent zero.
- scalar parameters (``delta``, ``label_smoothing``, ``ignore_index``, ``reduction``, a
  number ``quantile`` ...) are static Python values, as fastloss takes them; a traced value
  (an argument of the jitted function) is a TypeError naming the parameter. A new value
  compiles a new function, as any static argument of ``jax.jit``.
- errors: everything fastloss checks that does not depend on the arrays' values (types,
  dtypes, shapes, ``reduction``, parameters out of their domain) is raised when the call
  is traced, with fastloss's own exception type and message (naming the argument and what
  it got), prefixed with ``fastloss.jax.NAME:``: fastloss itself is run once per static
  signature (shapes, dtypes, parameters; cached) on valid placeholder arrays of the caller's
  shapes. Checks of values (a class index outside [0, C), a probability outside [0, 1],
  hinge labels other than +-1, a negative deviance target, an array quantile outside
  (0, 1)) can only run on the data: eagerly they raise fastloss's ValueError (prefixed);
  inside ``jax.jit`` the callback's ValueError surfaces when the result is computed as
  ``jax.errors.JaxRuntimeError`` (a RuntimeError), whose message ends with
  ``ValueError: <fastloss's message>`` (JAX also logs the callback's traceback).

Cost: a callback, not an XLA custom call: each call under ``jax.jit`` leaves XLA for
Python and back. Measured on the 2-core development machine (shared with other jobs, load
average about 2; jax 0.10.2; fastloss on 1 thread: on that loaded machine its 2 OpenMP
threads are 10 times slower at 1e6), per call of ``jax.jit(jax.value_and_grad(loss))``,
float32, median of 200, against the hand-written jitted jax.numpy loss::

    PYTHONPATH=. python bench/jax_overhead.py --repeat 200 --threads 1 [--callback pure]

                              buffer_callback (default)      pure_callback (older JAX)
    loss            elements  fastloss.jax   jax.numpy       fastloss.jax   jax.numpy
    cross_entropy      1e+01       44.7 us     25.1 us           353.5 us     23.8 us
    cross_entropy      1e+03       48.0 us    125.4 us           366.2 us    110.4 us
    cross_entropy      1e+06     7893.6 us  11965.2 us          8417.8 us  11065.5 us
    mse_loss           1e+01       37.3 us     22.2 us           343.8 us     19.6 us
    mse_loss           1e+03       39.3 us    103.4 us           353.3 us     92.1 us
    mse_loss           1e+06     1030.1 us   2142.6 us          5682.7 us   3011.7 us

(jax.numpy's own time at 1e3 varies between 50 and 130 us from run to run here.) With
``buffer_callback`` the fixed cost is about 20 us over a jitted jax.numpy loss's (40 us
against 22 us at 10 elements) and fastloss is faster from 1e3 elements on; with
``jax.pure_callback`` the fixed cost is about 0.35 ms and its copies (about 5 ms per 1e6
float32 inputs) make it slower than jax.numpy up to large batches. XLA's FFI (``jax.ffi``, a
C++ handler calling the C-level kernels) would cut the remaining fixed cost; not done.
"""

from __future__ import annotations

import functools
import inspect

try:
    import jax
    import jax.numpy as jnp
    from jax.custom_derivatives import SymbolicZero
except ImportError as exc:  # pragma: no cover - exercised with jax hidden
    raise ImportError(
        "fastloss.jax needs JAX, which is not installed: pip install jax "
        f"(or pip install 'fastloss[jax]'; fastloss itself works without it) [{exc}]") from exc

try:  # (experimental in JAX; the adapter falls back on jax.pure_callback without it)
    from jax.experimental.buffer_callback import buffer_callback as _buffer_callback
except ImportError:  # pragma: no cover - older JAX
    _buffer_callback = None

import numpy as np

import fastloss as _fl
from ._adapters import generate_function, numpy_signature, residual_sign, tensor_params
from ._registry import LOSSES, Loss

__all__ = [loss.name for loss in LOSSES]

# name -> (fastloss.NAME, fastloss.NAME_grad): the functions the callbacks call (looked up
# here at call time, so a test can watch what reaches them).
FUNCTIONS = {loss.name: (getattr(_fl, loss.name), getattr(_fl, loss.name + "_grad")) for loss in LOSSES}

_F32 = np.dtype(np.float32)
_HALF = (np.dtype(jnp.float16), np.dtype(jnp.bfloat16))
_FLOATS = (np.dtype(jnp.float32), np.dtype(jnp.float64)) + _HALF
_Tracer = jax.core.Tracer
# The callback primitive: jax.experimental.buffer_callback where JAX has it (in-place on
# XLA's buffers), else jax.pure_callback (set to None, the tests run that path too).
_BUFFER_CALLBACK = _buffer_callback


# --------------------------------------------------------------------------- dtypes and checks


def _compute_dtype(spec: Loss, input, target) -> np.dtype:
    """float32 or float64: the input's, promoted with a float target's for an elementwise
    loss; float16 and bfloat16 compute in float32."""
    if input.dtype not in _FLOATS:
        raise TypeError(f"fastloss.jax.{spec.name}: input must be a floating-point array (float32, float64, "
                        f"float16 or bfloat16), got dtype {input.dtype}")
    dtype = input.dtype
    if spec.kind == "elementwise" and target.dtype in _FLOATS:
        dtype = np.dtype(jnp.promote_types(dtype, target.dtype))
    return _F32 if dtype in _HALF else dtype


def _check_reduction(spec: Loss, reduction) -> str:
    """The reduction as an exact str, one of the loss's; fastloss's ValueError otherwise
    (the same message: it lists the choices)."""
    if isinstance(reduction, str) and str.__str__(reduction) in spec.reductions:
        return str.__str__(reduction)
    choices = ", ".join(repr(r) for r in spec.reductions)
    raise ValueError(f"fastloss.jax.{spec.name}: reduction must be one of {choices}, got {reduction!r}")


def _check_static(spec: Loss, names, values) -> None:
    """Scalar parameters are static: a traced value is a TypeError naming it."""
    for name, value in zip(names, values):
        if isinstance(value, _Tracer):
            raise TypeError(f"fastloss.jax.{spec.name}: {name} must be a Python number, a static value (fastloss "
                            f"takes it when the call is traced), got a traced value {value}; pass it as a constant "
                            "(or mark it static in jax.jit: static_argnames)")


def _real(spec: Loss, name: str, value):
    """An array argument as a JAX array of a real dtype (TypeError naming it otherwise)."""
    arr = value if isinstance(value, jax.Array) else jnp.asarray(value)
    if arr.dtype.kind not in "biuf" and arr.dtype not in _HALF:
        raise TypeError(f"fastloss.jax.{spec.name}: {name} must be a real (bool, integer or float) array, "
                        f"got dtype {arr.dtype}")
    return arr


def _indices(t: np.ndarray) -> np.ndarray:
    """Class indices as int64 when the conversion is exact (signed integers, unsigned below 64
    bits): JAX's int32 indices (without jax_enable_x64) would take fastloss's general path,
    int64 its compiled fast path (7 us instead of 42 us for 100 rows; the same bits). A copy
    of one index per sample; float targets and uint64 (refused by value) pass as they are."""
    kind, size = t.dtype.kind, t.dtype.itemsize
    return t.astype(np.int64) if (kind == "i" and size < 8) or (kind == "u" and size < 8) else t


def _loss_shape(spec: Loss, shape: tuple, reduction: str) -> tuple:
    if reduction not in ("none",):
        return ()
    if spec.kind == "elementwise":
        return tuple(shape)
    return () if len(shape) == 1 else (shape[0], *shape[2:])


def _reraise(spec: Loss, exc: Exception):
    """fastloss's TypeError or ValueError, its message prefixed with the adapter's name."""
    raise type(exc)(f"fastloss.jax.{spec.name}: {exc}") from exc


class _Static:
    """The scalar parameters of a call, hashed and compared by (type, repr) of each value:
    -0.0 and 0.0 (equal, same hash as floats) are two keys, so each reaches fastloss as passed."""

    __slots__ = ("values", "_key")

    def __init__(self, values: dict):
        self.values = values
        self._key = tuple((k, type(v), repr(v)) for k, v in values.items())

    def __hash__(self):
        return hash(self._key)

    def __eq__(self, other):
        return isinstance(other, _Static) and self._key == other._key


def _placeholder_target(spec: Loss, dtype: np.dtype, shape: tuple, static: dict):
    """A valid target of the caller's shape and dtype, for the trace-time check: 1 for an
    elementwise loss (inside every target domain: [0, 1], +-1, > 0), ``ignore_index`` (or 0)
    for class indices; a float target of a class loss keeps its dtype (fastloss decides
    whether it is class probabilities or refuses it)."""
    if spec.kind == "elementwise" or dtype.kind == "f" or dtype in _HALF:
        value = 1
    else:
        value = 0
        ignore = static.get("ignore_index")
        if dtype.kind in "iu" and isinstance(ignore, int) and not isinstance(ignore, bool):
            info = np.iinfo(dtype)
            if info.min <= ignore <= info.max:
                value = ignore
    return np.broadcast_to(np.asarray(value).astype(dtype), shape)


@functools.lru_cache(maxsize=1024)
def _checked(name: str, reduction: str, static: _Static, x_aval, t_aval, array_avals: tuple):
    """fastloss.NAME run once on valid placeholders of the call's static signature: every
    check that does not depend on the data raises here, when the call is traced. Cached per
    signature (shapes, dtypes, parameters)."""
    spec = _SPECS[name]
    (x_shape, x_dtype), (t_shape, t_dtype) = x_aval, t_aval
    x = np.broadcast_to(np.asarray(0.5, x_dtype), x_shape)  # 0.5: inside [0, 1] (binary_cross_entropy)
    t = _placeholder_target(spec, t_dtype, t_shape, static.values)
    arrays = {arg: np.broadcast_to(np.asarray(0.5 if arg == "quantile" else 1.0, dtype), shape)
              for arg, shape, dtype in array_avals}
    try:
        FUNCTIONS[name][0](x, t, reduction=reduction, **static.values, **arrays)
    except (TypeError, ValueError) as exc:
        _reraise(spec, exc)
    return True


# --------------------------------------------------------------------------- the operator


def _no_second_order(spec: Loss, fused):
    """``fused`` (the callback of NAME_grad) as a custom_jvp whose JVP raises: the gradient
    is a saved array, not a function JAX can differentiate again (grad of grad, hessian)."""
    fused = jax.custom_jvp(fused)

    def jvp(primals, tangents):
        raise NotImplementedError(
            f"fastloss.jax.{spec.name}: second derivatives are not supported (the backward pass reuses the fused "
            f"first-order gradient of fastloss.{spec.name}_grad); use fastloss.{spec.name}_grad_hess for the "
            "Hessian's diagonal, or a jax.numpy loss")

    fused.defjvp(jvp)
    return fused


@functools.lru_cache(maxsize=1024)
def _operator(name: str, reduction: str, static: _Static, x_aval, t_aval, array_names: tuple):
    """The custom_vjp function of one static signature: f(x, t, *arrays) -> loss, with x and
    t (and the arrays) already in the compute dtype."""
    spec = _SPECS[name]
    sign = residual_sign(spec)
    x_shape, dtype = x_aval
    loss_struct = jax.ShapeDtypeStruct(_loss_shape(spec, x_shape, reduction), dtype)
    grad_struct = jax.ShapeDtypeStruct(x_shape, dtype)
    kwargs = static.values
    target_is_float = t_aval[1].kind == "f"
    per_sample = reduction == "none" and spec.kind == "classes" and len(x_shape) > 1

    def arguments(arrays):
        return {**kwargs, **dict(zip(array_names, map(np.asarray, arrays)))}

    if _BUFFER_CALLBACK is not None:
        # XLA's own buffers: the arguments read in place, the gradient written into the
        # output buffer by fastloss (out=), the loss stored into its buffer; no copies.
        def loss_buffers(ctx, out, x, t, *arrays):
            np.asarray(out)[...] = FUNCTIONS[name][0](np.asarray(x), _indices(np.asarray(t)), reduction=reduction,
                                                      **arguments(arrays))

        def fused_buffers(ctx, out, x, t, *arrays):
            loss_out, grad_out = out
            loss, _ = FUNCTIONS[name][1](np.asarray(x), _indices(np.asarray(t)), reduction=reduction,
                                         out=np.asarray(grad_out), **arguments(arrays))
            np.asarray(loss_out)[...] = loss

        loss_call = _BUFFER_CALLBACK(loss_buffers, loss_struct, vmap_method="sequential")
        fused = _BUFFER_CALLBACK(fused_buffers, (loss_struct, grad_struct), vmap_method="sequential")
    else:
        def loss_callback(x, t, *arrays):  # (x, t, arrays: CPU jax.Arrays; NumPy views of them)
            loss = FUNCTIONS[name][0](np.asarray(x), _indices(np.asarray(t)), reduction=reduction, **arguments(arrays))
            return np.asarray(loss, dtype)

        def fused_callback(x, t, *arrays):
            loss, grad = FUNCTIONS[name][1](np.asarray(x), _indices(np.asarray(t)), reduction=reduction,
                                            **arguments(arrays))
            return np.asarray(loss, dtype), grad

        def loss_call(*args):
            return jax.pure_callback(loss_callback, loss_struct, *args, vmap_method="sequential")

        def fused(*args):
            return jax.pure_callback(fused_callback, (loss_struct, grad_struct), *args, vmap_method="sequential")

    fused = _no_second_order(spec, fused)

    @jax.custom_vjp
    def op(x, t, *arrays):
        return loss_call(x, t, *arrays)

    def fwd(x, t, *arrays):  # (CustomVJPPrimal: .value, .perturbed; symbolic_zeros=True)
        if t.perturbed and not (sign and target_is_float):
            raise NotImplementedError(
                f"fastloss.jax.{name}: differentiating with respect to target is not implemented for {name} (only "
                "for the losses of the residual input - target); differentiate with respect to input only, or "
                "wrap the target in jax.lax.stop_gradient")
        for arg, a in zip(array_names, arrays):
            if a.perturbed:
                raise NotImplementedError(
                    f"fastloss.jax.{name}: differentiating with respect to {arg} is not implemented; differentiate "
                    f"with respect to input only, or wrap {arg} in jax.lax.stop_gradient")
        loss, grad = fused(x.value, t.value, *(a.value for a in arrays))
        return loss, grad

    def bwd(grad, ct):
        # d loss / d input = grad (the fused gradient of the returned loss; of its sum for
        # "none"), so the input's cotangent is grad * ct: ct a scalar, or per element, or
        # per sample broadcast over the class axis 1; the target's is -grad * ct (residual
        # losses only: l(x - y) gives dl/dy = -dl/dx).
        if isinstance(ct, SymbolicZero):
            return (None, None) + (None,) * len(array_names)
        if per_sample:
            ct = jnp.expand_dims(ct, 1)
        g = grad * ct
        return (g, -g if sign and target_is_float else None) + (None,) * len(array_names)

    op.defvjp(fwd, bwd, symbolic_zeros=True)
    return op


# --------------------------------------------------------------------------- the front


def _forward(spec: Loss, input, target, arrays: dict, scalars: dict, reduction):
    """The adapter's call: dtypes and static checks, then fastloss directly (no tracer) or
    the custom_vjp operator of the call's static signature."""
    name = spec.name
    reduction = _check_reduction(spec, reduction)
    _check_static(spec, scalars, scalars.values())
    x = _real(spec, "input", input)
    t = _real(spec, "target", target)
    dtype = _compute_dtype(spec, x, t)
    x = x.astype(dtype)  # (a no-op when it is the compute dtype; exact for half precision)
    if spec.kind == "elementwise" or (spec.probability_target and t.dtype in _FLOATS and t.shape == x.shape):
        t = t.astype(dtype)  # (class indices keep their integer dtype)
    operands = {}
    static = dict(scalars)
    for arg, value in arrays.items():
        if arg == "quantile" and not isinstance(value, (jax.Array, np.ndarray, list, tuple)):
            static[arg] = value  # a number: a static parameter (fastloss checks it)
            continue
        if value is None:
            continue
        operands[arg] = _real(spec, arg, value).astype(dtype)
    static = _Static(static)
    leaves = (x, t, *operands.values())
    if not any(isinstance(a, _Tracer) for a in leaves):
        # no transformation sees this call: fastloss itself, on zero-copy views
        try:
            loss = FUNCTIONS[name][0](np.asarray(x), _indices(np.asarray(t)), reduction=reduction, **static.values,
                                      **{k: np.asarray(v) for k, v in operands.items()})
        except (TypeError, ValueError) as exc:
            _reraise(spec, exc)
        return jnp.asarray(np.asarray(loss, dtype))
    x_aval, t_aval = (x.shape, np.dtype(x.dtype)), (t.shape, np.dtype(t.dtype))
    _checked(name, reduction, static, x_aval, t_aval,
             tuple((arg, v.shape, np.dtype(v.dtype)) for arg, v in operands.items()))
    op = _operator(name, reduction, static, x_aval, t_aval, tuple(operands))
    return op(x, t, *operands.values())


_SPECS = {spec.name: spec for spec in LOSSES}


def _make_function(spec: Loss):
    sig = numpy_signature(spec)
    arrays = tensor_params(spec)
    scalar_names = [p.name for p in sig.parameters.values()
                    if p.name not in ("input", "target", "reduction") and p.name not in arrays]
    array_dict = "{" + ", ".join(f"{n!r}: {n}" for n in arrays) + "}"
    scalar_dict = "{" + ", ".join(f"{n!r}: {n}" for n in scalar_names) + "}"
    doc = (f"{spec.summary}\n\nfastloss's {spec.name} for JAX arrays (jax.jit, jax.grad, jax.vmap): "
           f"the signature of fastloss.{spec.name} without n_threads.\n\n"
           f"Per element: ``{spec.formula}``.\nThe rules of the adapter: help(fastloss.jax).")
    return generate_function(spec.name, sig, f"_forward(_spec, input, target, {array_dict}, {scalar_dict}, reduction)",
                             {"_forward": _forward, "_spec": spec}, __name__, doc)


globals().update({spec.name: _make_function(spec) for spec in LOSSES})


def reference_table() -> str:
    """The adapter's reference table (docs/API.md, "JAX adapter"), from the registry; the
    tests hold the docs to it."""
    out = ["| function | signature (beyond `input, target`) | target cotangent |", "|---|---|---|"]
    for spec in LOSSES:
        rest = str(inspect.signature(globals()[spec.name])).replace("(input, target, ", "(")
        target = "minus the input's" if residual_sign(spec) else "NotImplementedError"
        out.append(f"| `flj.{spec.name}` | `{rest}` | {target} |")
    return "\n".join(out)
