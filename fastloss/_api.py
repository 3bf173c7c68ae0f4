"""The front layer shared by both backends.

Everything a backend may rely on is established here, once: dtypes are coerced, shapes,
parameter domains and ``out`` are checked, values are checked (through the backend's fast
scanners) and every error is raised *before* anything is written. The backend then only
does math on arrays of a fixed, simple form (see ``numpy_backend`` for the contract).

No loss math lives here: only the *semantics of the reductions* (what "mean" divides by),
which PyTorch fixes per loss and the registry records.

The public functions themselves are generated from the registry (``make_public_api``), so
their signatures are real Python signatures and there is one code path for all of them.
"""

from __future__ import annotations

import math
import numbers
import operator
import os

import numpy as np

from ._registry import EXTRA_REDUCTIONS, KERNELS, LOSSES, MAX_THREADS, Loss

_F32 = np.dtype(np.float32)
_F64 = np.dtype(np.float64)
_REAL_KINDS = "biuf"  # bool, signed, unsigned, float (and ml_dtypes' bfloat16: _is_bfloat16)
_INT64 = np.iinfo(np.int64)
_KERNEL = {k.name: k for k in KERNELS}


# --------------------------------------------------------------------------- threads

_num_threads: int | None = None  # set by set_num_threads; None follows OpenMP


def _compiled_module():
    """fastloss.kernels when it was built, else None (looked up once)."""
    global _compiled
    if _compiled is False:
        try:
            from . import kernels as module
        except ImportError:
            module = None
        _compiled = module
    return _compiled


_compiled = False


def _usable_cpus() -> int:
    """The CPUs this process may run on: no call uses more threads (the compiled kernels
    clamp every parallel region to the same number, ``fl::team_size``)."""
    compiled = _compiled_module()
    if compiled is not None:
        return compiled.cpu_limit()
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _default_threads() -> int:
    """What OpenMP would use: the compiled module asks omp_get_max_threads() (so
    OMP_NUM_THREADS and threadpoolctl limits apply); without it, OMP_NUM_THREADS or the
    number of CPUs this process may run on."""
    compiled = _compiled_module()
    if compiled is not None:
        return compiled.omp_max_threads()
    env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if env.isdigit() and int(env) > 0:
        return min(int(env), MAX_THREADS)
    return _usable_cpus()


def get_num_threads() -> int:
    """The number of threads a call uses when ``n_threads`` is not given: the value of
    ``set_num_threads`` or OpenMP's default, at most the CPUs this process may run on."""
    n = _num_threads if _num_threads is not None else _default_threads()
    return max(1, min(n, _usable_cpus()))


def set_num_threads(n: int | None) -> None:
    """Set the default number of threads (``None``: follow OpenMP again)."""
    global _num_threads
    _num_threads = None if n is None else _check_threads(n)
    compiled = _compiled_module()
    if compiled is not None:  # the compiled fast path reads its own copy
        compiled.set_default_threads(_num_threads or 0)


def _check_threads(n) -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"n_threads must be a positive integer or None, got {n!r}")
    n = int(n)
    if n < 1:
        raise ValueError(f"n_threads must be a positive integer or None, got {n}")
    # More threads than this never help (work is split into blocks of 4096 elements and the
    # kernels use at most one thread per block); it also keeps the value a C int.
    return min(n, MAX_THREADS)


# --------------------------------------------------------------------------- coercion


def _refuse_masked(value, name: str) -> None:
    if isinstance(value, np.ma.MaskedArray):
        raise TypeError(
            f"{name} is a masked array; fastloss does not honour masks (it would compute with "
            f"the masked values): pass np.ma.getdata({name}) or np.ma.filled({name}, value), "
            "or give masked elements a weight of 0")


def _real_array(value, name: str) -> np.ndarray:
    if type(value) is np.ndarray:
        arr = value
    else:
        _refuse_masked(value, name)
        arr = np.asarray(value)
    if arr.dtype.kind not in _REAL_KINDS and not _is_bfloat16(arr.dtype):
        raise TypeError(f"{name} must be a real (bool, integer or float) array, got dtype {arr.dtype}")
    return arr


def _is_bfloat16(dtype: np.dtype) -> bool:
    """ml_dtypes' bfloat16, recognised without importing ml_dtypes (an optional package): a
    2-byte dtype of kind 'V' named "bfloat16" (not a structured dtype)."""
    return dtype.kind == "V" and dtype.itemsize == 2 and dtype.names is None and dtype.name == "bfloat16"


def _is_float(dtype: np.dtype) -> bool:
    """A float dtype: NumPy's (kind 'f', any byte order) or bfloat16."""
    return dtype.kind == "f" or _is_bfloat16(dtype)


def _is_float32(dtype: np.dtype) -> bool:
    """float32 in either byte order ('<f4', '>f4')."""
    return dtype.kind == "f" and dtype.itemsize == 4


def _half_dtype(dtype: np.dtype) -> np.dtype | None:
    """For a half-precision dtype, float16 (either byte order) or bfloat16, the dtype its
    gradient and Hessian are returned in (native byte order); None for any other dtype."""
    if dtype.kind == "f" and dtype.itemsize == 2:
        return dtype.newbyteorder("=")
    if _is_bfloat16(dtype):
        return dtype
    return None


def _compute_dtype(arr: np.ndarray) -> np.dtype:
    """float32 input (any byte order) computes in float32, and so do the half-precision ones
    (float16, either byte order, and bfloat16: upcast to a float32 copy); every other real
    dtype in float64."""
    return _F32 if _is_float32(arr.dtype) or _half_dtype(arr.dtype) is not None else _F64


def _as_compute(arr: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """A C-contiguous array of ``dtype`` in native byte order: the array itself when it
    already is one.

    Backends see only C-contiguous, native-order data, so any memory layout and byte order
    gives results bitwise identical to a contiguous native copy (sums always run in the
    same, logical, order)."""
    return np.asarray(arr, dtype=dtype, order="C")


def _short_repr(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:28] + "..." + text[-28:]


def _scalar_param(spec_param, value):
    if value is spec_param.default:
        return value
    name = spec_param.name
    if spec_param.type is bool:
        # Python and NumPy bools only: 0, 1 or 1.0 for a flag is a TypeError, as int for a
        # float parameter (the kernels get it as 0.0 / 1.0)
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{name} must be a bool (True or False), got {_short_repr(value)}")
        value = bool(value)
    elif spec_param.type is int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name} must be an integer, got {value!r}")
        value = int(value)
    else:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name} must be a real number, got {value!r}")
        try:
            value = float(value)
        except OverflowError:  # an integer beyond the float range
            raise ValueError(f"{name} must be {spec_param.domain} that a float64 holds, "
                             f"got {_short_repr(value)}") from None
    if not spec_param.valid(value):
        raise ValueError(f"{name} must be {spec_param.domain}, got {_short_repr(value)}")
    return value


def _check_reduction(reduction, spec: Loss) -> str:
    """The reduction as an exact str, one of the loss's (``spec.reductions``: "mean", "sum",
    "none" and its extra ones, such as kl_div's "batchmean"), else a ValueError listing them."""
    # A str subclass (np.str_) counts by its characters: str.__str__ gives the exact str, so
    # no __eq__ of the subclass runs (one that raises cannot be taken for "mean").
    if isinstance(reduction, str):
        text = str.__str__(reduction)
        if text in spec.reductions:
            return text
    choices = ", ".join(repr(r) for r in spec.reductions)
    raise ValueError(f"reduction must be one of {choices}, got {_short_repr(reduction)}")


def _batch_divisor(shape: tuple) -> float:
    """"batchmean"'s divisor (PyTorch's kl_div): the size of the first axis, 1 for a 0-d
    input (the sum); 0 for an empty batch (its mean is then NaN, as "mean"'s)."""
    return float(shape[0]) if shape else 1.0


def _elementwise_weight(weight, name: str, shape: tuple, dtype: np.dtype):
    """An elementwise weight broadcast to ``shape``, as its repeating block.

    Returns a 1-D C-contiguous array ``w`` of length P, with P dividing the element count,
    such that element i of the (C-order) flattened input has weight ``w[i % P]``. The block
    is decided by the weight's *shape* alone (its leading size-1 axes repeat), never by its
    strides, so every memory layout of the same weight gives the same bits. A scalar weight
    gives P = 1, a weight over the last axis P = shape[-1]; a weight that repeats only along
    inner axes (e.g. shape (N, 1)) is materialised at the full size."""
    w = _real_array(weight, name)
    try:
        np.broadcast_shapes(w.shape, shape)
        if len(w.shape) > len(shape) or np.broadcast_shapes(w.shape, shape) != shape:
            raise ValueError
    except ValueError:
        raise ValueError(
            f"{name} of shape {w.shape} does not broadcast to the input's shape {shape}"
        ) from None
    if math.prod(shape) == 0:  # empty batch: nothing to weigh
        return np.zeros(0, dtype)
    padded = w.reshape((1,) * (len(shape) - w.ndim) + w.shape)
    lead = 0
    while lead < len(shape) and padded.shape[lead] == 1:
        lead += 1
    block = np.broadcast_to(padded[(0,) * lead], shape[lead:])
    return np.asarray(block, dtype=dtype, order="C").reshape(-1)


def _out_dtype_ok(out_dtype: np.dtype, dtype: np.dtype, half: np.dtype | None) -> bool:
    """``out`` may be of the compute dtype, in either byte order (a non-native out receives
    the gradient through a copy, np.copyto swapping the bytes, so the caller reads the right
    values), or, for a half-precision input (``half``), of the input's half dtype (float16 in
    either byte order; the float32 results rounded into it)."""
    if out_dtype.kind == "f" and out_dtype.itemsize == dtype.itemsize:
        return True
    return half is not None and _half_dtype(out_dtype) == half


def _check_out(out, shape: tuple, dtype: np.dtype, half: np.dtype | None = None) -> None:
    _refuse_masked(out, "out")
    accepted = f"{dtype}" if half is None else f"{dtype} or {half}"
    if not isinstance(out, np.ndarray):
        raise ValueError(f"out must be a NumPy array of shape {shape} and dtype {accepted}, got {type(out).__name__}")
    if out.shape != shape or not _out_dtype_ok(out.dtype, dtype, half):
        what = ("the input's shape and compute dtype" if half is None else
                "the input's shape, and its compute dtype or its own half-precision dtype")
        raise ValueError(
            f"out must have shape {shape} and dtype {accepted} ({what}), "
            f"got shape {out.shape} and dtype {out.dtype}"
        )
    if not out.flags.writeable:
        raise ValueError("out must be writable, got a read-only array")
    if _may_overlap_itself(out):
        raise ValueError(f"out must not overlap itself (elements sharing memory), got strides {out.strides}")


def _may_overlap_itself(a: np.ndarray) -> bool:
    """Whether two elements of ``a`` may share bytes (a zero stride over more than one
    element, or strides that interleave): sorted by stride, each axis must step over the
    whole extent of the smaller ones. Conservative: exotic interleaved layouts that do not
    overlap are refused too."""
    if a.size <= 1:
        return False
    extent = a.itemsize
    for stride, size in sorted((abs(st), n) for st, n in zip(a.strides, a.shape) if n > 1):
        if stride < extent:
            return True
        extent += stride * (size - 1)
    return False


def _kernel_out(out, x, others, kernel_shape):
    """The array the kernel writes the gradient into, or None to let it allocate.

    The kernel writes ``out`` directly when it is C-contiguous and overlaps no operand
    other than being exactly the input (in-place). Otherwise the kernel writes a fresh
    array that the caller copies into ``out`` afterwards."""
    if (out is None or type(out) is not np.ndarray or not out.flags.c_contiguous or not out.dtype.isnative
            or out.dtype != x.dtype):  # (a half-precision out receives the rounded results)
        return None  # (a subclass such as np.matrix may not reshape to the kernel's shape)
    for a in others:
        if a is not None and np.may_share_memory(out, a):
            return None
    if np.may_share_memory(out, x) and out.ctypes.data != x.ctypes.data:
        return None
    return out.reshape(kernel_shape)


def _normal_weight_scale(w: np.ndarray, divisor: float, dtype: np.dtype):
    """The weight (elementwise, or the class weights: every loss is linear in them) and the
    "mean" divisor (their sum), both times the same power of two, so that 1 / sum is a normal
    number of the compute dtype: the mean's gradient g * (w / sum) is computed as
    g * (w * (1 / sum)), which for weights summing to a subnormal number (1 / sum overflows)
    or, in float32, beyond the float32 range (1 / sum underflows) would be inf or lose its
    bits. Scaling by 2**k is exact, and the mean (sum of w l, divided by the sum of w) is
    unchanged. Weights whose sum is normal-sized are returned as they are (no bit changes)."""
    if not divisor or not math.isfinite(divisor):
        return w, divisor
    info = np.finfo(dtype)
    exponent = math.frexp(abs(divisor))[1]  # 2**(e - 1) <= |divisor| < 2**e
    if info.minexp + 2 <= -exponent and 1 - exponent <= info.maxexp - 2:
        return w, divisor  # 1 / divisor is comfortably normal
    with np.errstate(all="ignore"):
        return np.ldexp(w, -exponent).astype(dtype), math.ldexp(divisor, -exponent)


# ----- reductions: the Python twin of csrc/reduction.hpp (the compiled fast path and the C
# level use that one; tests/numerics/test_reduction_semantics.py holds the two to the same
# results on every edge: zero, signed zero, subnormal, inf and NaN divisors and totals).


def _mean_scale(reduction: str, divisor: float) -> float:
    """The gradient's scale: 1 / divisor for "mean" (inf for a zero divisor), else 1."""
    if reduction != "mean":
        return 1.0
    return 1.0 / divisor if divisor else math.inf


def _reduced(total: float, divisor: float, reduction: str) -> float:
    """The reduced loss: the total, or for "mean" ``total / divisor`` with IEEE semantics
    (0/0 is NaN: the empty-batch mean)."""
    if reduction != "mean":
        return total
    if divisor:
        return total / divisor
    return math.nan if total == 0 or math.isnan(total) else math.copysign(math.inf, total)


# --------------------------------------------------------------------------- the call


def _check_hessian(value) -> float:
    """The Hessian policy as the kernels take it: 0.0 for "exact", else the positive constant."""
    if isinstance(value, str) and str.__str__(value) == "exact":
        return 0.0
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        try:
            c = float(value)
        except OverflowError:
            c = math.inf
        if c > 0 and math.isfinite(c):
            return c
    raise ValueError(f'hessian must be "exact" or a positive finite number, got {_short_repr(value)}')


def _check_out_pair(out, shape, dtype, half=None):
    if not isinstance(out, tuple) or len(out) != 2:
        accepted = f"{dtype}" if half is None else f"{dtype} or {half}"
        raise ValueError(f"out must be None or a pair (grad_out, hess_out) of arrays of shape {shape} "
                         f"and dtype {accepted}, got {_short_repr(out)}")
    grad_out, hess_out = out
    for name, o in (("out[0] (grad_out)", grad_out), ("out[1] (hess_out)", hess_out)):
        try:
            _check_out(o, shape, dtype, half)
        except ValueError as e:
            raise ValueError(str(e).replace("out ", f"{name} ", 1)) from None
        except TypeError as e:
            raise TypeError(str(e).replace("out ", f"{name} ", 1)) from None
    if np.shares_memory(grad_out, hess_out):
        raise ValueError("out: grad_out and hess_out must not overlap each other")


def _call(spec: Loss, backend, input, target, weight, pos_weight, ignore_index, params,
          reduction, n_threads, out, want_grad, hessian=None):
    """One call of a public function: the loss, with the gradient (``want_grad``), and the
    Hessian's diagonal (``want_grad == 2``; ``hessian`` the policy)."""
    reduction = _check_reduction(reduction, spec)
    n_threads = get_num_threads() if n_threads is None else _check_threads(n_threads)
    params = tuple(_scalar_param(p, v) for p, v in zip(spec.params, params))
    want_hess = want_grad == 2
    hess_const = _check_hessian(hessian) if want_hess and spec.hessian_policy is not None else 0.0

    x_in = _real_array(input, "input")
    dtype = _compute_dtype(x_in)
    # half precision (float16, bfloat16): computed in float32 on the upcast values, the loss
    # float32, the gradient and the Hessian rounded to the input's dtype (or written to out's)
    half = _half_dtype(x_in.dtype)
    shape = x_in.shape
    if spec.kind == "elementwise":
        prepared = _prepare_elementwise(spec, backend, x_in, target, weight, pos_weight, params, dtype, n_threads)
    else:
        prepared = _prepare_classes(spec, backend, x_in, target, weight, ignore_index, params, dtype)
    kernel_name, x, t, w, pw, kparams, divisor, loss_shape, kernel_shape = prepared

    grad_out = hess_out = None
    if out is not None:
        if want_hess:
            _check_out_pair(out, shape, dtype, half)
            grad_out, hess_out = out
        else:
            _check_out(out, shape, dtype, half)
            grad_out = out

    # ----- every check has passed: from here on, results are written
    if reduction == "batchmean":  # a mean by the batch size: "mean" with that divisor
        reduction, divisor = "mean", _batch_divisor(shape)
    if reduction == "mean" and w is not None and _KERNEL[kernel_name].mean_divisor != "count":
        w, divisor = _normal_weight_scale(w, divisor, dtype)
    grad_scale = _mean_scale(reduction, divisor)
    kout = _kernel_out(grad_out, x, (t, w, pw), kernel_shape) if want_grad else None
    hout = _kernel_out(hess_out, x, (t, w, pw, kout), kernel_shape) if want_hess else None
    hess = None
    if x.size == 0:
        # An empty batch costs O(1) whatever the class count, and zero classes (every sample
        # ignored, validated above) need no math: no backend call (a backend may do O(C) work
        # per call: class weight sums, one-hot ranges). Every loss term is 0.
        total, loss_values = 0.0, np.zeros(loss_shape, dtype)
        grad = kout if kout is not None else np.empty(kernel_shape, dtype)
        hess = hout if hout is not None else np.empty(kernel_shape, dtype)
    else:
        args = (x, t, w, pw, kparams, reduction == "none", grad_scale if want_grad else None, kout, n_threads)
        if want_hess:
            total, loss_values, grad, hess = backend.KERNELS[kernel_name](*args, (hout, hess_const))
        else:
            total, loss_values, grad = backend.KERNELS[kernel_name](*args)

    if reduction == "none":
        loss = loss_values.reshape(loss_shape)
    else:
        loss = dtype.type(_reduced(total, divisor, reduction))
    if not want_grad:
        return loss
    grad = _delivered(grad, kout, grad_out, shape, half)
    if not want_hess:
        return loss, grad
    return loss, grad, _delivered(hess, hout, hess_out, shape, half)


def _delivered(values, kernel_buffer, out, shape, half=None):
    """What a twin returns for one output: ``out`` (holding ``values``, rounded to its dtype)
    or ``values`` (rounded to ``half``, the half-precision input's dtype, when given).

    A float32 value beyond the half dtype's range rounds to +-inf, as the contract says,
    without NumPy's cast-overflow warning (a float32 ``out`` keeps it finite)."""
    if out is None:
        values = values.reshape(shape)
        if half is None:
            return values
        with np.errstate(over="ignore"):
            return values.astype(half)
    if values is not kernel_buffer:
        with np.errstate(over="ignore"):
            np.copyto(out, values.reshape(shape), casting="unsafe")  # float32 -> a half out: rounded
    return out


def _prepare_elementwise(spec, backend, x_in, target, weight, pos_weight, params, dtype, n_threads):
    t_in = _real_array(target, "target")
    shape = x_in.shape
    if t_in.shape != shape:
        raise ValueError(f"input and target must have the same shape, got input {shape} and target {t_in.shape}")
    x = _as_compute(x_in, dtype).reshape(-1)
    t = _as_compute(t_in, dtype).reshape(-1)
    n = x.size
    w = pw = None
    if weight is not None:
        w = _elementwise_weight(weight, "weight", shape, dtype)
    if spec.operand_domain is not None:  # a required operand (quantile): its values checked
        pos_weight = _checked_operand(spec, pos_weight)
    if pos_weight is not None:
        pw = _elementwise_weight(pos_weight, spec.operand, shape, dtype)
    if n == 0:  # nothing to weigh; keeps every kernel's "P divides n" simple
        w = pw = None

    if spec.input_domain == "unit":
        _check_unit(backend, x, "input", n_threads)
    if spec.target_domain == "unit":
        _check_unit(backend, t, "target", n_threads)
    elif spec.target_domain == "sign":
        bad = backend.first_non_sign(t, n_threads)
        if bad is not None:
            raise ValueError(f"target (labels) must be -1 or +1, got {bad!r}")
    elif spec.target_domain in ("nonnegative", "positive"):
        strict = spec.target_domain == "positive"
        bad = backend.first_negative(t, n_threads, strict)
        if bad is not None:
            raise ValueError(f"target must be {'> 0' if strict else '>= 0'}, got {bad!r}")

    if spec.mean_divisor == "weight_sum" and w is not None:
        divisor = backend.float64_sum(w) * (n // w.size)
    else:
        divisor = float(n)
    return spec.kernel_name, x, t, w, pw, params, divisor, shape, (n,)


def _checked_operand(spec, value):
    """The operand (quantile) as a float64 array of valid values: a number or an array of
    numbers, each in the registry's domain (TypeError for what is not real, ValueError naming
    the first bad value)."""
    name, domain = spec.operand, spec.operand_domain
    if value is None or isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be a number or an array of numbers, got {_short_repr(value)}")
    arr = _real_array(value, name)
    if arr.dtype.kind == "b":
        raise TypeError(f"{name} must be a number or an array of numbers, got booleans")
    arr = np.asarray(arr, np.float64)
    bad = np.flatnonzero(~domain.mask(arr))
    if bad.size:
        raise ValueError(f"{name} must be {domain}, got {arr.reshape(-1)[bad[0]].item()!r}")
    return arr


def _check_unit(backend, a, name, n_threads):
    bad = backend.first_outside_unit(a, n_threads)
    if bad is not None:
        raise ValueError(f"{name} (probabilities) must lie in [0, 1], got {bad!r}")


def _prepare_classes(spec, backend, x_in, target, weight, ignore_index, params, dtype):
    shape = x_in.shape
    if x_in.ndim == 0 or (spec.max_input_dims and x_in.ndim > spec.max_input_dims):
        allowed = "(N, C) or (C,)" if spec.max_input_dims == 2 else "(N, C), (C,) or (N, C, d1, ...)"
        raise ValueError(f"input must have shape {allowed}, got {shape}")
    if x_in.ndim == 1:
        n_rows, n_classes, inner = 1, shape[0], 1
        index_shape = ()
    else:
        n_rows, n_classes = shape[0], shape[1]
        inner = math.prod(shape[2:])
        index_shape = (shape[0],) + shape[2:]
    kernel_shape = (n_rows, n_classes, inner)
    x = _as_compute(x_in, dtype).reshape(kernel_shape)

    t_in = _real_array(target, "target")
    probabilities = _is_float(t_in.dtype) and spec.probability_target and t_in.shape == shape
    if not probabilities:
        if t_in.dtype.kind not in "iu":
            what = "class indices or class probabilities of the input's shape" if spec.probability_target else "class indices"
            raise TypeError(f"target must hold integer {what}, got dtype {t_in.dtype} and shape {t_in.shape}")
        if t_in.shape != index_shape:
            raise ValueError(
                f"target of class indices must have shape {index_shape} for input of shape {shape}, got {t_in.shape}"
            )

    w = None
    if weight is not None:
        w = _as_compute(_real_array(weight, "weight"), dtype)
        if w.shape != (n_classes,):
            raise ValueError(f"weight must have shape (C,) = ({n_classes},), one weight per class, got {w.shape}")

    # ignore_index is checked whatever the target's form (unused with probabilities)
    if spec.ignore_index:
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral):
            raise TypeError(f"ignore_index must be an integer, got {ignore_index!r}")
        ignore_index = int(ignore_index)
        if not _INT64.min <= ignore_index <= _INT64.max:
            raise ValueError(f"ignore_index must be an integer in [-2**63, 2**63), got {_short_repr(ignore_index)}")
    else:
        ignore_index = None
    if probabilities:
        t = _as_compute(t_in, dtype).reshape(kernel_shape)
        return ("cross_entropy_probs", x, t, w, None, params, float(n_rows * inner),
                index_shape, kernel_shape)

    # Unsigned indices of 64 bits (any byte order) at or above 2**63 would wrap to negative
    # int64 values (possibly ignore_index): refused by their true value first.
    if t_in.dtype.kind == "u" and t_in.dtype.itemsize >= 8 and t_in.size and t_in.max() > _INT64.max:
        raise ValueError(f"target holds class index {int(t_in.max())}, outside [0, {n_classes})")
    # A backend whose kernels read each index once where they use it (checking it there)
    # may share the caller's array; any other gets a private copy, so that the indices it
    # validates are the ones it uses even while another thread changes the caller's.
    if getattr(backend, "CHECKS_INDICES_WHERE_USED", False):
        t = np.asarray(t_in, dtype=np.int64, order="C").reshape(n_rows, inner)
    else:
        t = np.array(t_in, dtype=np.int64, order="C", copy=True).reshape(n_rows, inner)
    bad, target_weight = backend.class_target_stats(t, n_classes, ignore_index, w)
    if bad is not None:
        raise ValueError(f"target holds class index {bad}, outside [0, {n_classes})"
                         + (f" and not ignore_index ({ignore_index})" if ignore_index is not None else ""))
    divisor = target_weight if spec.mean_divisor == "target_weight" else float(n_rows * inner)
    kparams = ((ignore_index,) if spec.ignore_index else ()) + params
    return spec.kernel_name, x, t, w, None, kparams, divisor, index_shape, kernel_shape


# --------------------------------------------------------------------------- generation


def _signature_parts(spec: Loss, grad: int):
    """The keyword-only parameters of a public function, in PyTorch's order (``grad``: 0 the
    loss, 1 its ``_grad`` twin, 2 its ``_grad_hess`` twin)."""
    # Scalar parameters' defaults are the registry's own objects (_defaults), so the fast path
    # can test them by identity.
    n_params = len(spec.params)
    kw = [f"{name}={default!r}" for name, _, default in spec.keywords()[:len(spec.keywords()) - n_params]]
    kw += [f"{p.name}=_defaults[{i}]" for i, p in enumerate(spec.params)]
    kw += ['reduction="mean"', "n_threads=None"]
    if grad:
        kw.append("out=None")
    if grad == 2:
        kw += [f"{name}={default!r}" for name, _, default in spec.hessian_keyword()]
    return kw


def _docstring(spec: Loss, grad: int, backend_name: str) -> str:
    lines = [spec.summary, ""]
    if grad == 2:
        lines += [
            f"Fused loss, gradient and Hessian: returns ``(loss, grad, hess)`` where ``loss`` and "
            f"``grad`` are bitwise ``{spec.name}_grad(...)`` with the same arguments and ``hess`` is",
            "the diagonal of the Hessian of that loss with respect to ``input`` (of its sum for",
            "``reduction='none'``), shaped like ``input``, in the compute dtype (float16 and bfloat16",
            "input: in the input's dtype, rounded from float32). ``out`` (optional) is a pair",
            "``(grad_out, hess_out)`` of arrays that do not overlap each other (either may be",
            "``input`` itself).",
            "",
        ]
        if spec.hessian_policy is not None:
            lines += [f"``hessian`` (default {spec.hessian_policy!r}): ``\"exact\"`` for the exact "
                      "second derivative, or a positive constant that replaces every term's second",
                      "derivative (then weighted and scaled like the exact one), as tree boosters need.", ""]
    elif grad:
        lines += [
            f"Fused loss and gradient: returns ``(loss, grad)`` where ``loss`` is bitwise "
            f"``{spec.name}(...)`` with the same arguments and ``grad`` is the gradient of that",
            "loss with respect to ``input`` (of its sum for ``reduction='none'``), shaped like",
            "``input``, in the compute dtype (float16 and bfloat16 input: in the input's dtype,",
            "rounded from float32). ``out`` (optional) receives the gradient; it may be ``input``",
            "itself.",
            "",
        ]
    lines += [f"Per element: ``{spec.formula}``.", f"Gradient: ``{spec.gradient}``."]
    if grad == 2:
        lines += [f"Hessian (diagonal): ``{spec.hessian}``."]
    divisor = {
        "count": "the number of loss terms",
        "weight_sum": "the sum of the weight broadcast to the input's shape (the element count without weight)",
        "target_weight": "the sum of weight[target] over non-ignored samples (their count without weight)",
    }[spec.mean_divisor]
    lines += [f"``reduction='mean'`` divides the summed loss by {divisor}."]
    lines += [f"``reduction='{r}'`` divides the summed loss by {EXTRA_REDUCTIONS[r]} (its gradient and Hessian "
              "are scaled by the same divisor)." for r in spec.extra_reductions]
    lines += list(spec.notes)
    for p in spec.params:
        lines.append(f"``{p.name}`` ({p.domain}, default {p.default!r}): {p.doc}.")
    lines += ["", "Dtypes: float32 input computes in float32; float16 and bfloat16 (ml_dtypes) input",
              "computes in float32 on its upcast values (a float32 loss; the gradient and Hessian",
              "in the input's dtype, or in ``out``'s: the input's dtype or float32); every other",
              "real dtype in float64. Sums are float64.",
              "", f"Backend: {backend_name}. The full contract: docs/API.md (installed as "
              "fastloss/API.md; ``python -m fastloss api`` prints it)."]
    return "\n".join(lines)


def _fast_path_source(spec: Loss, grad: int) -> str:
    """The lines that try the backend's fast path first (see ``kernels.pyx``), with every
    argument as passed: the weight and the operand (pos_weight, quantile), the scalar
    parameters as a tuple (None when every one is its default, by identity: the kernel's
    preloaded defaults). The fast path takes the common forms of each (exact ndarrays of the
    compute dtype, Python floats, values of exactly the parameter's Python type inside its
    domain) and returns None for the rest, which goes to the general path."""
    if spec.params:
        defaults = " and ".join(f"{p.name} is _defaults[{i}]" for i, p in enumerate(spec.params))
        params = f"None if {defaults} else ({''.join(p.name + ', ' for p in spec.params)})"
    else:
        params = "None"
    if spec.kind == "classes":
        args = "input, target, " + ("ignore_index, " if spec.ignore_index else "None, ")
        extra = ", weight" if spec.weight else ""
    else:
        args = "input, target, " + ("weight, " if spec.weight else "None, ")
        extra = f", {spec.operand}" if spec.operand else ""
    # the Hessian policy ("exact" for a loss without one, and for the loss and _grad twins)
    hessian = "hessian" if grad == 2 and spec.hessian_policy is not None else "'exact'"
    return (
        f"    if _fast is not None:\n"
        f"        result = _fast({args}reduction, n_threads, {'out' if grad else 'None'}, {grad}, {hessian}, "
        f"{params}{extra})\n"
        f"        if result is not None:\n"
        f"            return result\n"
    )


def make_public_api(backend) -> dict:
    """The public functions (every loss and its ``_grad`` and ``_grad_hess`` twins) bound to
    ``backend``; an ImportError names any kernel of the registry the backend lacks."""
    missing = [k.name for k in KERNELS if k.name not in backend.KERNELS]
    if hasattr(backend, "HESSIANS"):  # the NumPy backend: elementwise second derivatives apart
        missing += [f"{k.name} (its @hessian)" for k in KERNELS
                    if k.loss.kind == "elementwise" and k.name not in backend.HESSIANS]
    extra = [name for name in backend.KERNELS if name not in _KERNEL]
    if missing or extra:
        raise ImportError(f"fastloss backend {backend.NAME!r}: no kernel for {missing}; "
                          f"kernels the registry does not have: {extra}")
    functions = {}
    for spec in LOSSES:
        fast = getattr(backend.KERNELS[spec.kernel_name], "fast", None)
        for grad in (0, 1, 2):
            name = spec.functions[grad]
            kw = _signature_parts(spec, grad)
            params = "".join(f"{p.name}, " for p in spec.params)
            src = (
                f"def {name}(input, target, *, {', '.join(kw)}):\n"
                + _fast_path_source(spec, grad)
                + f"    return _call(_spec, _backend, input, target, "
                f"{'weight' if spec.weight else 'None'}, "
                f"{spec.operand or 'None'}, "
                f"{'ignore_index' if spec.ignore_index else 'None'}, "
                f"({params}), reduction, n_threads, {'out' if grad else 'None'}, {grad}"
                f"{', hessian' if grad == 2 and spec.hessian_policy is not None else ''})\n"
            )
            namespace = {"_call": _call, "_spec": spec, "_backend": backend, "_fast": fast,
                         "_defaults": tuple(p.default for p in spec.params)}
            exec(compile(src, f"<fastloss generated {name}>", "exec"), namespace)
            fn = namespace[name]
            fn.__doc__ = _docstring(spec, grad, backend.NAME)
            fn.__module__ = "fastloss"
            fn.__source__ = src
            functions[name] = fn
    return functions
