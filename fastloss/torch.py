"""fastloss for PyTorch: every loss of the registry as a ``torch.nn.functional``-style function.

    >>> import fastloss.torch as flt
    >>> loss = flt.cross_entropy(logits, labels, label_smoothing=0.1)
    >>> loss.backward()

For every loss ``NAME`` of ``fastloss._registry`` (generated from the registry at import: a
new row gets its adapter with no code here), ``flt.NAME(input, target, ...)`` takes CPU
tensors and returns a tensor that takes part in autograd:

- signature: ``torch.nn.functional.NAME``'s, positional order included, minus the
  deprecated ``size_average`` and ``reduce``, where PyTorch has the loss (read from
  ``inspect.signature`` at import and checked against the registry's parameters: a mismatch
  is an ImportError); the NumPy API's (``input, target, *, <parameters>, reduction``)
  otherwise. No ``n_threads``: the thread count is ``fastloss.set_num_threads``'s.
- forward: one call of the fused ``fastloss.NAME_grad`` when the input (or the target)
  requires grad and grad mode is on, of ``fastloss.NAME`` otherwise. Contiguous CPU
  float32/float64 tensors reach NumPy without a copy (``.numpy()`` views); a non-contiguous
  tensor is made contiguous first (one copy); int64 class indices pass through as they are.
- backward: the saved fused gradient times ``grad_output`` (a scalar for "mean", "sum" and
  "batchmean"; per element for "none" of elementwise losses, per sample for "none" of class
  losses); nothing is recomputed. Double backward raises RuntimeError.
- dtypes: the input's (for an elementwise loss, promoted with a float target's, as
  torch.nn.functional); float16 and bfloat16 are computed in float32 (an upcast copy), the
  loss returned as a float32 tensor, the gradient in the input's dtype. (The kernels do not take half precision
  natively yet: the upcast is a copy.)
- target gradients: for the losses of the residual ``x - y`` alone (``mse_loss``,
  ``l1_loss``, ``huber_loss``, ``smooth_l1_loss``, ``pinball_loss``, ``log_cosh_loss``,
  ``pseudo_huber_loss``: derived from the registry's formulas) the target's gradient is
  minus the input's, exactly; any other loss raises NotImplementedError when the target
  (or ``weight``, ``pos_weight``, ``quantile``) requires grad, never a wrong or missing
  gradient.
- each loss is the custom operator ``torch.ops.fastloss.NAME`` (``torch.library.custom_op``
  with a fake implementation and ``register_autograd``): ``torch.compile(fullgraph=True)``
  keeps it in one graph. Eager calls skip the dispatcher (its Python layers cost more than a
  small loss): a ``torch.autograd.Function`` per loss with grad, ``fastloss.NAME`` alone
  without; the operator when traced, under a mode or a ``torch.func`` transform. The same
  bits either way. ``loss.backward()`` (grad_output 1) gets the saved gradient as it is.
- errors: the adapter's own for what is torch's (a non-CPU tensor: ValueError; an input
  that is not a float tensor: TypeError; each naming the argument); fastloss's own checks
  for everything else (shapes, values, parameters), raised by the operator.
"""

from __future__ import annotations

import inspect

try:
    import torch
except ImportError as exc:  # pragma: no cover - exercised with torch hidden
    raise ImportError(
        "fastloss.torch needs PyTorch, which is not installed: pip install torch "
        f"(fastloss itself works without it) [{exc}]") from exc

import numpy as np

import fastloss as _fl
from ._adapters import generate_function, numpy_signature, residual_sign, tensor_params
from ._registry import LOSSES, Loss

__all__ = [loss.name for loss in LOSSES]

_DEPRECATED = ("size_average", "reduce")
_COMPUTE = (torch.float32, torch.float64)
_HALF = (torch.float16, torch.bfloat16)

# name -> (fastloss.NAME, fastloss.NAME_grad): the functions the operators call (looked up
# here at call time, so a test can watch what reaches them).
FUNCTIONS = {loss.name: (getattr(_fl, loss.name), getattr(_fl, loss.name + "_grad")) for loss in LOSSES}



# --------------------------------------------------------------------------- registry facts


def torch_signature(spec: Loss) -> inspect.Signature | None:
    """torch.nn.functional.NAME's signature without ``size_average`` and ``reduce``, checked
    against the registry (ImportError on any difference); None when PyTorch lacks the loss."""
    fn = getattr(torch.nn.functional, spec.name, None)
    if fn is None:
        return None
    sig = inspect.signature(fn)
    params = [p for p in sig.parameters.values() if p.name not in _DEPRECATED]
    names = [p.name for p in params]
    expected = {"input": inspect.Parameter.empty, "target": inspect.Parameter.empty, "reduction": "mean"}
    expected.update({name: default for name, _, default in spec.keywords()})
    got = {p.name: p.default for p in params}
    if names[:2] != ["input", "target"] or got != expected:
        raise ImportError(
            f"fastloss.torch: torch.nn.functional.{spec.name}{sig} does not match the registry's "
            f"parameters {sorted(expected)} (defaults {expected}); torch {torch.__version__}")
    return sig.replace(parameters=params)


def signature_of(spec: Loss) -> tuple[inspect.Signature, str]:
    """The adapter's signature and where it comes from ("torch.nn.functional" or "numpy")."""
    sig = torch_signature(spec)
    return (sig, "torch.nn.functional") if sig is not None else (numpy_signature(spec), "numpy")


# --------------------------------------------------------------------------- the operators


def _array(t):
    """A tensor as a NumPy array sharing its memory (None stays None)."""
    return None if t is None else t.detach().numpy()


def _loss_shape(spec: Loss, shape, reduction: str):
    if reduction != "none":
        return ()
    if spec.kind == "elementwise":
        return tuple(shape)
    return () if len(shape) == 1 else (shape[0], *shape[2:])


_NUMPY_DTYPE = {torch.float32: np.dtype(np.float32), torch.float64: np.dtype(np.float64)}


def _kwargs(names: tuple, tensors, scalar_names: tuple, scalars) -> dict:
    """fastloss's keyword arguments: the tensors given (not None) as arrays sharing their
    memory, a 0-d quantile as a float, and the scalar parameters as passed (fastloss's
    compiled fast path takes them, defaults or not)."""
    kwargs = {name: value.detach().numpy() for name, value in zip(names, tensors) if value is not None}
    if "quantile" in kwargs and kwargs["quantile"].ndim == 0:
        kwargs["quantile"] = float(kwargs["quantile"])
    kwargs.update(zip(scalar_names, scalars))
    return kwargs


def _loss_tensor(loss, dtype):
    """fastloss's loss as a tensor: an array as it is (no copy), a scalar as a 0-d tensor of
    the compute dtype."""
    if isinstance(loss, np.ndarray):
        return torch.from_numpy(loss)
    return torch.from_numpy(np.array(loss, dtype=_NUMPY_DTYPE[dtype]))


def _run(spec: Loss, input, target, tensors: dict, scalars: dict, reduction: str, want_grad: bool):
    """The real implementation of the operator: one call of fastloss.NAME(_grad)."""
    kwargs = _kwargs(tuple(tensors), tuple(tensors.values()), tuple(scalars), tuple(scalars.values()))
    loss_fn, grad_fn = FUNCTIONS[spec.name]
    x, t = _array(input), _array(target)
    if want_grad:
        loss, grad = grad_fn(x, t, reduction=reduction, **kwargs)
        grad = torch.from_numpy(grad)
    else:
        loss = loss_fn(x, t, reduction=reduction, **kwargs)
        grad = input.new_empty((0,))
    return _loss_tensor(loss, input.dtype), grad


def _fake(spec: Loss, input, reduction: str, want_grad: bool):
    loss = input.new_empty(_loss_shape(spec, input.shape, reduction))
    return loss, input.new_empty(input.shape if want_grad else (0,))


class _NoDoubleBackward(torch.autograd.Function):
    """The identity on the first-order gradient whose own backward refuses: differentiating
    the gradient again (double backward) is a clear RuntimeError, not a silent zero."""

    @staticmethod
    def forward(ctx, grad, input, name):
        ctx.name = name
        return grad.clone()

    @staticmethod
    def backward(ctx, *_):
        raise RuntimeError(f"fastloss.torch.{ctx.name}: double backward is not supported (the backward "
                           "pass reuses the fused first-order gradient); use torch.nn.functional for "
                           "second-order derivatives")


def _input_grads(name: str, sign: int, grad, input, grad_loss, needs, eager: bool):
    """The backward of both forms (the custom operator's and the eager autograd.Function's):
    (input's gradient, target's gradient), each None unless ``needs`` asks for it: the saved
    fused gradient times ``grad_output`` (per sample for "none" of a class loss: one
    grad_output per sample, broadcast over the classes), the target's minus the input's for a
    loss of the residual (``sign``). With ``create_graph=True`` the result is a graph whose
    own backward refuses (double backward: a clear error).

    ``eager``: a scalar ``grad_output`` of 1 (``loss.backward()``) returns the saved gradient
    as it is (no pass over it; ``grad * 1`` has the same bits). Safe: while the graph holds it
    (retain_graph=True), autograd neither steals it for .grad nor adds into it (both need the
    last reference), and an in-place change by a user who gets it (torch.autograd.grad) fails
    the saved tensor's version check on a second backward; once the graph has freed it,
    nothing else holds it. Not for the operator: torch.compile traces its backward, where
    grad_output's value is not known."""
    create_graph = torch.is_grad_enabled()
    if grad_loss.dim() == 0:
        g = grad if eager and not create_graph and grad_loss.item() == 1.0 else grad * grad_loss
    elif grad.dim() > grad_loss.dim():  # "none" of a class loss: one grad_output per sample
        g = grad * grad_loss.unsqueeze(1)
    else:
        g = grad * grad_loss
    if create_graph:  # create_graph=True: a graph whose own backward refuses
        g = _NoDoubleBackward.apply(g, input, name)
    return g if needs[0] else None, -g if sign and needs[1] else None


def _make_backward(spec: Loss, arg_names: list[str]):
    sign = residual_sign(spec)
    n_args = len(arg_names)

    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output[1], inputs[0])
        ctx.want_grad = inputs[-1]
        ctx.mark_non_differentiable(output[1])

    def backward(ctx, grad_loss, _grad_grad):
        grad, input = ctx.saved_tensors
        if not ctx.want_grad:  # (only a direct call of the operator with want_grad=False)
            raise RuntimeError(f"torch.ops.fastloss.{spec.name}: no fused gradient was computed "
                               f"(want_grad=False); call fastloss.torch.{spec.name}")
        # (traced by torch.compile: no look at grad_loss's value, so never the saved tensor itself)
        grads = [None] * n_args
        grads[0], grads[1] = _input_grads(spec.name, sign, grad, input, grad_loss, ctx.needs_input_grad, False)
        return tuple(grads)

    return setup_context, backward


_SCHEMA_TYPES = {float: "float", int: "int", bool: "bool"}


def _make_operator(spec: Loss):
    """torch.ops.fastloss.NAME(input, target, <tensors>, [ignore_index], <scalars>, reduction,
    want_grad) -> (loss, fused gradient or an empty tensor)."""
    tensors = tensor_params(spec)
    scalars = (["ignore_index"] if spec.ignore_index else []) + [p.name for p in spec.params]
    types = {"ignore_index": "int", **{p.name: _SCHEMA_TYPES[p.type] for p in spec.params}}
    args = ["input: Tensor", "target: Tensor"]
    args += [f"{n}: Tensor" if n == "quantile" else f"{n}: Optional[Tensor]" for n in tensors]
    args += [f"{n}: {types[n]}" for n in scalars] + ["reduction: str", "want_grad: bool"]
    tensor_dict = "{" + ", ".join(f"{n!r}: {n}" for n in tensors) + "}"
    scalar_dict = "{" + ", ".join(f"{n!r}: {n}" for n in scalars) + "}"
    src = (f"def impl({', '.join(args)}) -> Tuple[Tensor, Tensor]:\n"
           f"    return _run(_spec, input, target, {{k: v for k, v in {tensor_dict}.items() if v is not None}}, "
           f"{scalar_dict}, reduction, want_grad)\n"
           f"def fake({', '.join(args)}) -> Tuple[Tensor, Tensor]:\n"
           f"    return _fake(_spec, input, reduction, want_grad)\n")
    namespace = {"Tensor": torch.Tensor, "Optional": __import__("typing").Optional,
                 "Tuple": __import__("typing").Tuple, "_run": _run, "_fake": _fake, "_spec": spec}
    exec(compile(src, f"<fastloss.torch operator {spec.name}>", "exec"), namespace)
    op = torch.library.custom_op(f"fastloss::{spec.name}", namespace["impl"], mutates_args=())
    op.register_fake(namespace["fake"])
    names = ["input", "target", *tensors, *scalars, "reduction", "want_grad"]
    setup_context, backward = _make_backward(spec, names)
    op.register_autograd(backward, setup_context=setup_context)
    return op, tensors, scalars


# --------------------------------------------------------------------------- the front


def _device_check(name: str, value, loss: str):
    if value.device.type != "cpu":
        raise ValueError(f"fastloss.torch.{loss}: {name} is on device {value.device}; fastloss computes on "
                         f"the CPU only (move it with {name}.cpu(), or use torch.nn.functional on {value.device.type})")


def _compute_dtype(spec: Loss, input, target):
    """float32 or float64: the input's, or for an elementwise loss with a float target the
    two promoted (as torch.nn.functional: float32 input and float64 target compute in
    float64); float16 and bfloat16 compute in float32."""
    if input.dtype not in _COMPUTE + _HALF:
        raise TypeError(f"fastloss.torch.{spec.name}: input must be a floating-point tensor (float32, float64, "
                        f"float16 or bfloat16), got dtype {input.dtype}")
    dtype = input.dtype
    if spec.kind == "elementwise" and target.dtype in _COMPUTE + _HALF:
        dtype = torch.promote_types(dtype, target.dtype)
    return dtype if dtype in _COMPUTE else torch.float32


def _as_operand(name: str, value, dtype, loss: str):
    """A tensor argument (weight, pos_weight, quantile, a float target) as a contiguous CPU
    tensor of the compute dtype (itself when it is one already); numbers become 0-d tensors."""
    if not isinstance(value, torch.Tensor):
        return torch.as_tensor(value, dtype=dtype)
    _device_check(name, value, loss)
    if value.dtype.is_floating_point or name != "target":
        value = value.to(dtype)
    return value.contiguous()


def _make_eager(spec: Loss):
    """The eager form of the operator, a ``torch.autograd.Function`` (what ``torch.compile``
    traces is the custom operator; the two give the same bits): forward calls
    fastloss.NAME_grad and saves its gradient; backward scales it by ``grad_output``. Its
    Python dispatch costs a fraction of the custom operator's (the operator's eager call
    goes through the dispatcher, its autograd kernel and ``fill_defaults``)."""
    name, sign = spec.name, residual_sign(spec)

    def forward(ctx, x, target, kwargs, reduction):
        # (.detach() only for what requires grad: .numpy() refuses it, and a detach costs
        # about as much as the kernel on 1e3 elements)
        loss, grad = FUNCTIONS[name][1](x.detach().numpy(), (target.detach() if target.requires_grad else target).numpy(),
                                        reduction=reduction, **kwargs)
        grad = torch.from_numpy(grad)
        ctx.save_for_backward(grad, x)
        return _loss_tensor(loss, x.dtype)

    def backward(ctx, grad_loss):
        grad, x = ctx.saved_tensors
        return (*_input_grads(name, sign, grad, x, grad_loss, ctx.needs_input_grad, True), None, None)

    cls = type(f"{name}_backward", (torch.autograd.Function,),
               {"forward": staticmethod(forward), "backward": staticmethod(backward),
                "__qualname__": f"{name}_backward", "__module__": __name__})
    # The C-level apply of torch.autograd.Function, without its Python wrapper (which binds
    # setup_context's defaults, none here, and unwraps functorch's dead wrappers: a call
    # under a torch.func transform takes the custom operator, see _eager).
    return super(torch.autograd.Function, cls).apply


def _eager() -> bool:
    """Whether a call may take the eager path (no compiler tracing, no tensor subclass
    dispatch, no torch.func transform, no mode): the custom operator otherwise."""
    return not (torch.compiler.is_compiling() or torch._C._len_torch_dispatch_stack()
                or torch._C._are_functorch_transforms_active() or torch._C._is_torch_function_mode_enabled())


_F32, _F64, _Tensor = torch.float32, torch.float64, torch.Tensor
_wrapped = torch._C._functorch.is_functorch_wrapped_tensor  # (a tensor escaped from a torch.func transform)
_NO_KWARGS: dict = {}


class _Plan:
    """What a loss's calls need, worked out once at import."""

    __slots__ = ("spec", "name", "elementwise", "sign", "op", "apply", "tensor_names", "scalar_names")

    def __init__(self, spec: Loss):
        self.spec, self.name = spec, spec.name
        self.elementwise, self.sign = spec.kind == "elementwise", residual_sign(spec)
        self.op, self.tensor_names, self.scalar_names = _make_operator(spec)
        self.apply = _make_eager(spec)


def _forward(plan: _Plan, input, target, tensors: tuple, scalars: tuple, reduction):
    """The adapter's call: checks, compute dtype and contiguous operands, then the eager
    autograd.Function (or fastloss alone without grad), or the custom operator when traced."""
    name = plan.name
    if not isinstance(input, _Tensor):
        raise TypeError(f"fastloss.torch.{name}: input must be a torch.Tensor, got {type(input).__name__}")
    if not isinstance(target, _Tensor):
        raise TypeError(f"fastloss.torch.{name}: target must be a torch.Tensor, got {type(target).__name__}")
    if not input.is_cpu:
        _device_check("input", input, name)
    if not target.is_cpu:
        _device_check("target", target, name)
    elementwise = plan.elementwise
    dtype, target_dtype = input.dtype, target.dtype
    if not ((dtype is _F32 or dtype is _F64) and (target_dtype is dtype or not elementwise)):
        dtype = _compute_dtype(plan.spec, input, target)
    grad_mode = torch.is_grad_enabled()
    given = bool(tensors) and any(value is not None for value in tensors)
    if grad_mode:
        if given:
            for arg, value in zip(plan.tensor_names, tensors):
                if isinstance(value, _Tensor) and value.requires_grad:
                    raise NotImplementedError(f"fastloss.torch.{name}: {arg} requires grad; the gradient with "
                                              f"respect to {arg} is not implemented (use torch.nn.functional, or "
                                              "detach it)")
        want_grad = input.requires_grad
        if target.requires_grad:
            if not plan.sign:
                raise NotImplementedError(f"fastloss.torch.{name}: target requires grad; the gradient with respect "
                                          f"to the target is not implemented for {name} (only for losses of the "
                                          "residual input - target): detach the target, or use torch.nn.functional")
            want_grad = True
    else:
        want_grad = False
    x = input if input.dtype is dtype else input.to(dtype)
    if not x.is_contiguous():  # no copy for a contiguous float32/float64 tensor
        x = x.contiguous()
    if target_dtype is not dtype and (elementwise or target_dtype.is_floating_point):
        target = target.to(dtype)
    if not target.is_contiguous():
        target = target.contiguous()
    if given:
        tensors = [None if value is None else _as_operand(arg, value, dtype, name)
                   for arg, value in zip(plan.tensor_names, tensors)]
    if not (type(x) is _Tensor and type(target) is _Tensor and _eager() and not _wrapped(x) and not _wrapped(target)):
        return plan.op(x, target, *tensors, *scalars, reduction, want_grad)[0]
    if given:
        kwargs = _kwargs(plan.tensor_names, tensors, plan.scalar_names, scalars)
    else:  # (the scalars as passed, as _kwargs gives them)
        kwargs = dict(zip(plan.scalar_names, scalars)) if scalars else _NO_KWARGS
    if want_grad:
        return plan.apply(x, target, kwargs, reduction)
    loss = FUNCTIONS[name][0]((x.detach() if x.requires_grad else x).numpy(),
                              (target.detach() if target.requires_grad else target).numpy(), reduction=reduction, **kwargs)
    return _loss_tensor(loss, dtype)


def _make_function(spec: Loss):
    plan = _Plan(spec)
    op, tensor_names, scalar_names = plan.op, plan.tensor_names, plan.scalar_names
    sig, origin = signature_of(spec)
    tensors = "(" + "".join(f"{n}, " for n in tensor_names) + ")"
    scalars = "(" + "".join(f"{n}, " for n in scalar_names) + ")"
    doc = (f"{spec.summary}\n\nfastloss's {spec.name} for torch tensors (autograd, torch.compile): "
           f"signature of {'torch.nn.functional.' + spec.name if origin != 'numpy' else 'fastloss.' + spec.name}"
           f"{' without size_average and reduce' if origin != 'numpy' else ' without n_threads'}.\n\n"
           f"Per element: ``{spec.formula}``.\nThe rules of the adapter: help(fastloss.torch).")
    fn = generate_function(spec.name, sig, f"_forward(_plan, input, target, {tensors}, {scalars}, reduction)",
                           {"_forward": _forward, "_plan": plan}, __name__, doc)
    fn.operator = op
    fn.signature_origin = origin
    return fn


globals().update({spec.name: _make_function(spec) for spec in LOSSES})


def reference_table() -> str:
    """The adapter's reference table (docs/API.md, "PyTorch adapter"), from the registry and
    the signatures above; the tests hold the docs to it."""
    out = ["| function | signature (beyond `input, target`) | from | target gradient |", "|---|---|---|---|"]
    for spec in LOSSES:
        origin = signature_of(spec)[1]
        rest = str(inspect.signature(globals()[spec.name])).replace("(input, target, ", "(")
        source = f"`torch.nn.functional.{spec.name}`" if origin != "numpy" else f"`fastloss.{spec.name}`"
        target = "minus the input's" if residual_sign(spec) else "NotImplementedError"
        out.append(f"| `flt.{spec.name}` | `{rest}` | {source} | {target} |")
    return "\n".join(out)
