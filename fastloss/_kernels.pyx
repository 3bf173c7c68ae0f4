# distutils: language = c++
# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""fastloss's compiled backend: typed glue around the fused C++ kernels of _kernels.hpp.

This module implements the backend contract documented in ``fastloss.numpy_backend``:
``NAME``, ``KERNELS`` and the three scanners. The front layer (``fastloss._api``) has
already checked and coerced every operand, so the glue only takes raw pointers, releases
the GIL and calls the kernel.
"""

cimport numpy as cnp
from libc.stdint cimport int64_t

import math

import numpy as np

cnp.import_array()

cdef extern from *:
    """
    #ifndef FASTLOSS_OPENMP
    #define FASTLOSS_OPENMP 0
    #endif
    #if FASTLOSS_OPENMP
    #include <omp.h>
    static int fl_omp_max_threads(void) { return omp_get_max_threads(); }
    #else
    static int fl_omp_max_threads(void) { return 1; }
    #endif

    /* OpenMP after fork. GNU libgomp cannot start a parallel region in a child forked
       after the parent ran one: the child waits forever for the parent's thread pool, which
       fork did not copy. So, as PyTorch does, a forked child runs every kernel on one
       thread: a pthread_atfork child handler (registered when this module is imported)
       sets fl_forked_child, and fl_usable_threads caps every kernel call's thread count.
       Results are unchanged: they do not depend on the thread count. */
    #if FASTLOSS_OPENMP && !defined(_WIN32)
    #include <pthread.h>
    static volatile int fl_forked_child = 0;
    static void fl_on_fork_child(void) { fl_forked_child = 1; }
    static int fl_register_atfork(void) { return pthread_atfork(NULL, NULL, fl_on_fork_child); }
    #else
    static const int fl_forked_child = 0;
    static int fl_register_atfork(void) { return 0; }
    #endif
    static inline int fl_usable_threads(int n) { return fl_forked_child ? 1 : n; }
    """
    int FASTLOSS_OPENMP
    int fl_omp_max_threads() nogil
    int fl_forked_child
    int fl_register_atfork()
    int fl_usable_threads(int n) nogil

if fl_register_atfork() != 0:
    raise ImportError("fastloss: pthread_atfork failed (cannot make forked children safe)")

cdef extern from "_kernels.hpp" namespace "fl" nogil:
    ctypedef Py_ssize_t idx
    cdef enum Kernel "fl::kernel::Id":
        K_MSE "fl::kernel::MSE"
        K_L1 "fl::kernel::L1"
        K_HUBER "fl::kernel::HUBER"
        K_SMOOTH_L1 "fl::kernel::SMOOTH_L1"
        K_BCE "fl::kernel::BCE"
        K_BCE_LOGITS "fl::kernel::BCE_LOGITS"
        K_HINGE "fl::kernel::HINGE"
        K_SQUARED_HINGE "fl::kernel::SQUARED_HINGE"
        K_CROSS_ENTROPY "fl::kernel::CROSS_ENTROPY"
        K_CROSS_ENTROPY_PROBS "fl::kernel::CROSS_ENTROPY_PROBS"
        K_NLL "fl::kernel::NLL"
        K_MULTI_MARGIN "fl::kernel::MULTI_MARGIN"
    const char* simd_name_c "fl::simd_name"()

    cdef cppclass ElementwiseArgs[T]:
        const T* x
        const T* y
        const T* w
        const T* pw
        idx w_period
        idx pw_period
        T* loss
        T* grad
        T scale
        idx n

    cdef cppclass ClassArgs[T]:
        const T* x
        const int64_t* target
        const T* probs
        const T* w
        idx N, C, K
        T* loss
        T* grad
        T scale
        int64_t ignore_index
        double p0, p1

    double elementwise[T](int kernel, const ElementwiseArgs[T]& a, const double* params, int n_threads)
    double classes[T](int kernel, const ClassArgs[T]& a, int n_threads)
    idx first_outside_unit_c "fl::first_outside_unit"[T](const T* a, idx n, int n_threads)
    idx first_non_sign_c "fl::first_non_sign"[T](const T* a, idx n, int n_threads)
    idx class_target_stats_c "fl::class_target_stats"[T](const int64_t* t, idx n, idx C, bint has_ignore,
                                                        int64_t ignore_index, const T* w, double* weight_sum)

NAME = "cython"


def openmp_enabled():
    """Whether the kernels were compiled with OpenMP."""
    return bool(FASTLOSS_OPENMP)


def simd_level():
    """The instruction set the kernels run with on this CPU (chosen at run time)."""
    return simd_name_c().decode()


def in_forked_child():
    """Whether this process is a fork of one that imported fastloss (kernels run serially)."""
    return bool(fl_forked_child)


def omp_max_threads():
    """omp_get_max_threads(): OMP_NUM_THREADS and threadpoolctl limits apply (1 without OpenMP)."""
    return fl_omp_max_threads()


cdef int _threads_set = 0  # fastloss.set_num_threads(n), mirrored here for the fast path


def set_default_threads(int n):
    """Mirror of fastloss.set_num_threads (0: follow OpenMP)."""
    global _threads_set
    _threads_set = n


cdef inline int default_threads() noexcept:
    return _threads_set if _threads_set > 0 else fl_omp_max_threads()


cdef inline void* data(object a) noexcept:
    return cnp.PyArray_DATA(<cnp.ndarray>a) if a is not None else NULL


cdef inline bint is_f32(cnp.ndarray a) noexcept:
    return cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT32


# ----------------------------------------------------------------------------- scanners


cdef enum ValueRule:
    UNIT_INTERVAL  # values in [0, 1]
    SIGN           # values -1 or +1


cdef object first_breaking(int rule, cnp.ndarray a, int n_threads):
    """The first value of ``a`` breaking ``rule`` (NaN breaks both), or None."""
    cdef idx n = cnp.PyArray_SIZE(a), i
    cdef void* p = data(a)
    cdef bint f32 = is_f32(a)
    n_threads = fl_usable_threads(n_threads)
    with nogil:
        if rule == UNIT_INTERVAL:
            if f32:
                i = first_outside_unit_c[float](<const float*>p, n, n_threads)
            else:
                i = first_outside_unit_c[double](<const double*>p, n, n_threads)
        else:
            if f32:
                i = first_non_sign_c[float](<const float*>p, n, n_threads)
            else:
                i = first_non_sign_c[double](<const double*>p, n, n_threads)
    return None if i < 0 else a.reshape(-1)[i].item()


def first_outside_unit(cnp.ndarray a, int n_threads):
    return first_breaking(UNIT_INTERVAL, a, n_threads)


def first_non_sign(cnp.ndarray a, int n_threads):
    return first_breaking(SIGN, a, n_threads)


def class_target_stats(cnp.ndarray t, idx n_classes, ignore_index, w):
    cdef idx n = cnp.PyArray_SIZE(t), i
    cdef const int64_t* tp = <const int64_t*>data(t)
    cdef bint has_ignore = ignore_index is not None
    cdef int64_t ignore = ignore_index if has_ignore else 0
    cdef void* wp = data(w)
    cdef bint f32 = w is not None and is_f32(w)
    cdef double weight_sum = 0
    with nogil:
        if f32:
            i = class_target_stats_c[float](tp, n, n_classes, has_ignore, ignore, <const float*>wp, &weight_sum)
        else:
            i = class_target_stats_c[double](tp, n, n_classes, has_ignore, ignore, <const double*>wp, &weight_sum)
    if i >= 0:
        return int(t.reshape(-1)[i]), 0.0
    return None, weight_sum



# ----------------------------------------------------------------------------- fast path
# The common call (exact ndarrays, C-contiguous, one float dtype, matching shapes, no weight,
# default parameters, a valid `out` or none) goes straight to the kernel with the very
# arguments the front layer would pass, so results are bitwise those of the general path.
# Anything else, including every error, returns None and takes the general path
# (fastloss._api), which owns all checks and messages. Values are still scanned here.

cdef object _f32_scalar = np.float32
cdef object _f64_scalar = np.float64


cdef inline bint plain_float(object a, int typenum) noexcept:
    """An exact ndarray, C-contiguous, of dtype typenum (float32 or float64)."""
    return (type(a) is np.ndarray and cnp.PyArray_TYPE(<cnp.ndarray>a) == typenum
            and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>a))


cdef inline bint same_shape(cnp.ndarray a, cnp.ndarray b) noexcept:
    cdef int d, nd = cnp.PyArray_NDIM(a)
    if cnp.PyArray_NDIM(b) != nd:
        return False
    for d in range(nd):
        if cnp.PyArray_DIM(a, d) != cnp.PyArray_DIM(b, d):
            return False
    return True


cdef inline bint overlaps(cnp.ndarray a, cnp.ndarray b) noexcept:
    cdef char* pa = <char*>cnp.PyArray_DATA(a)
    cdef char* pb = <char*>cnp.PyArray_DATA(b)
    return pa < pb + cnp.PyArray_NBYTES(b) and pb < pa + cnp.PyArray_NBYTES(a)


cdef inline bint usable_out(object out, cnp.ndarray x, int typenum, cnp.ndarray other) noexcept:
    """out can take the gradient directly: input's shape and dtype, writable, contiguous,
    overlapping no operand except being the input itself."""
    if not plain_float(out, typenum):
        return False
    cdef cnp.ndarray o = <cnp.ndarray>out
    if not same_shape(o, x) or not cnp.PyArray_ISWRITEABLE(o) or overlaps(o, other):
        return False
    return not overlaps(o, x) or cnp.PyArray_DATA(o) == cnp.PyArray_DATA(x)


cdef inline int reduction_code(object reduction) noexcept:
    if reduction == "mean":
        return 0
    if reduction == "sum":
        return 1
    if reduction == "none":
        return 2
    return -1


from ._api import MAX_THREADS as _MAX_THREADS

cdef int max_threads = _MAX_THREADS  # larger n_threads take the general path (clamped there)


cdef inline int thread_count(object n_threads) noexcept:
    if n_threads is None:
        return default_threads()
    if type(n_threads) is int and 0 < n_threads <= max_threads:
        return n_threads
    return -1


cdef inline object grad_buffer(object out, cnp.ndarray x, int typenum, bint want_grad):
    """Where the fast path's gradient goes: the caller's out, else a new array like x."""
    if not want_grad:
        return None
    return out if out is not None else empty_like_shape(x, typenum)


cdef inline double mean_scale(int reduction, double divisor) noexcept:
    """The gradient's scale: 1 / divisor for "mean" (inf for an empty divisor, as _api)."""
    if reduction != 0:
        return 1.0
    return 1.0 / divisor if divisor else math.inf


cdef object fast_result(double total, double divisor, int reduction, int typenum, object loss,
                        object grad, bint want_grad):
    result = loss if reduction == 2 else scalar_result(total, divisor, reduction, typenum)
    return (result, grad) if want_grad else result


cdef object scalar_result(double total, double divisor, int reduction, int typenum):
    cdef double value = total
    if reduction == 0:
        value = total / divisor if divisor != 0 else (
            math.nan if total == 0 or total != total else math.copysign(math.inf, total))
    return _f32_scalar(value) if typenum == cnp.NPY_FLOAT32 else _f64_scalar(value)


# ----------------------------------------------------------------------------- kernels

# Weight runs shorter than this are tiled up to it, so the hot loop runs long (a scalar
# weight would otherwise make runs of one element).
cdef idx MIN_WEIGHT_RUN = 4096


cdef object _tile(object w, idx n):
    """A periodic weight tiled to a multiple of its period at least MIN_WEIGHT_RUN long
    (at most n), so the kernel's runs between period boundaries stay long."""
    if w is None:
        return None
    cdef idx period = w.size
    cdef idx reps = max(1, min(-(-MIN_WEIGHT_RUN // period), n // period))
    return np.tile(w, reps) if reps > 1 else w


cdef inline cnp.ndarray empty_like_shape(cnp.ndarray a, int typenum):
    return cnp.PyArray_EMPTY(cnp.PyArray_NDIM(a), cnp.PyArray_DIMS(a), typenum, 0)


cdef class _Elementwise:
    """An elementwise kernel: see the backend contract in fastloss.numpy_backend."""

    cdef readonly int kernel
    cdef double default_params[2]
    cdef bint input_unit, target_unit, target_sign

    def __init__(self, str name, int kernel):
        from ._registry import BY_NAME

        spec = BY_NAME[name]
        self.kernel = kernel
        self.default_params[0] = spec.params[0].default if len(spec.params) > 0 else 0.0
        self.default_params[1] = spec.params[1].default if len(spec.params) > 1 else 0.0
        self.input_unit = spec.input_domain == "unit"
        self.target_unit = spec.target_domain == "unit"
        self.target_sign = spec.target_domain == "sign"

    cdef double run(self, cnp.ndarray x, cnp.ndarray t, object w, object pw,
                    const double* prm, object loss, object grad, double scale, int n_threads):
        cdef idx n = cnp.PyArray_SIZE(x)
        cdef double total
        cdef ElementwiseArgs[float] af
        cdef ElementwiseArgs[double] ad
        n_threads = fl_usable_threads(n_threads)
        if is_f32(x):
            af.x, af.y = <const float*>data(x), <const float*>data(t)
            af.w, af.pw = <const float*>data(w), <const float*>data(pw)
            af.w_period = w.size if w is not None else 0
            af.pw_period = pw.size if pw is not None else 0
            af.loss, af.grad, af.scale, af.n = <float*>data(loss), <float*>data(grad), <float>scale, n
            with nogil:
                total = elementwise[float](self.kernel, af, prm, n_threads)
        else:
            ad.x, ad.y = <const double*>data(x), <const double*>data(t)
            ad.w, ad.pw = <const double*>data(w), <const double*>data(pw)
            ad.w_period = w.size if w is not None else 0
            ad.pw_period = pw.size if pw is not None else 0
            ad.loss, ad.grad, ad.scale, ad.n = <double*>data(loss), <double*>data(grad), scale, n
            with nogil:
                total = elementwise[double](self.kernel, ad, prm, n_threads)
        return total

    def __call__(self, cnp.ndarray x, cnp.ndarray t, w, pw, tuple params, bint want_none,
                 grad_scale, out, int n_threads):
        cdef idx n = cnp.PyArray_SIZE(x)
        cdef double prm[2]
        prm[0] = params[0] if len(params) > 0 else 0.0
        prm[1] = params[1] if len(params) > 1 else 0.0
        w, pw = _tile(w, n), _tile(pw, n)
        loss = np.empty(n, x.dtype) if want_none else None
        grad = None
        if grad_scale is not None:
            grad = out if out is not None else np.empty(n, x.dtype)
        cdef double scale = grad_scale if grad_scale is not None else 1.0
        total = self.run(x, t, w, pw, prm, loss, grad, scale, n_threads)
        return (None if want_none else total), loss, grad

    def fast(self, input, target, reduction, n_threads, out, bint want_grad):
        """The common call, or None (see "fast path" above)."""
        if type(input) is not np.ndarray:
            return None
        cdef int typenum = cnp.PyArray_TYPE(<cnp.ndarray>input)
        if typenum != cnp.NPY_FLOAT32 and typenum != cnp.NPY_FLOAT64:
            return None
        if not plain_float(input, typenum) or not plain_float(target, typenum):
            return None
        cdef cnp.ndarray x = <cnp.ndarray>input, t = <cnp.ndarray>target
        cdef int red = reduction_code(reduction), nt = thread_count(n_threads)
        if red < 0 or nt < 0 or not same_shape(x, t):
            return None
        if want_grad and out is not None and not usable_out(out, x, typenum, t):
            return None
        cdef idx n = cnp.PyArray_SIZE(x)
        if self.input_unit and first_breaking(UNIT_INTERVAL, x, nt) is not None:
            return None
        if self.target_unit and first_breaking(UNIT_INTERVAL, t, nt) is not None:
            return None
        if self.target_sign and first_breaking(SIGN, t, nt) is not None:
            return None
        loss = empty_like_shape(x, typenum) if red == 2 else None
        grad = grad_buffer(out, x, typenum, want_grad)
        total = self.run(x, t, None, None, self.default_params, loss, grad, mean_scale(red, n), nt)
        return fast_result(total, n, red, typenum, loss, grad, want_grad)


cdef class _Classes:
    """A class kernel: see the backend contract in fastloss.numpy_backend."""

    cdef readonly int kernel
    cdef double default_params[2]
    cdef bint has_ignore

    def __init__(self, str name, int kernel):
        from ._registry import BY_NAME

        spec = BY_NAME[name]
        self.kernel = kernel
        self.default_params[0] = spec.params[0].default if len(spec.params) > 0 else 0.0
        self.default_params[1] = spec.params[1].default if len(spec.params) > 1 else 0.0
        self.has_ignore = spec.ignore_index

    cdef double run(self, cnp.ndarray x, object t, object w, int64_t ignore, double p0, double p1,
                    object loss, object grad, double scale, int n_threads):
        cdef idx N = x.shape[0], C = x.shape[1], K = x.shape[2] if x.ndim == 3 else 1
        cdef int kernel = self.kernel
        cdef bint probs = kernel == K_CROSS_ENTROPY_PROBS
        cdef double total
        cdef ClassArgs[float] af
        cdef ClassArgs[double] ad
        cdef const int64_t* tp = NULL
        n_threads = fl_usable_threads(n_threads)
        if not probs:
            tp = <const int64_t*>data(t)
        if is_f32(x):
            af.x, af.target, af.w = <const float*>data(x), tp, <const float*>data(w)
            af.probs = <const float*>data(t) if probs else NULL
            af.N, af.C, af.K = N, C, K
            af.loss, af.grad, af.scale = <float*>data(loss), <float*>data(grad), <float>scale
            af.ignore_index, af.p0, af.p1 = ignore, p0, p1
            with nogil:
                total = classes[float](kernel, af, n_threads)
        else:
            ad.x, ad.target, ad.w = <const double*>data(x), tp, <const double*>data(w)
            ad.probs = <const double*>data(t) if probs else NULL
            ad.N, ad.C, ad.K = N, C, K
            ad.loss, ad.grad, ad.scale = <double*>data(loss), <double*>data(grad), scale
            ad.ignore_index, ad.p0, ad.p1 = ignore, p0, p1
            with nogil:
                total = classes[double](kernel, ad, n_threads)
        return total

    def __call__(self, cnp.ndarray x, cnp.ndarray t, w, pw, tuple params, bint want_none,
                 grad_scale, out, int n_threads):
        cdef idx N = x.shape[0], C = x.shape[1], K = x.shape[2]
        cdef int kernel = self.kernel
        cdef int64_t ignore = 0
        cdef double p0 = 0, p1 = 0
        # params per kernel, as the front layer passes them (registry order)
        if kernel == K_CROSS_ENTROPY:
            ignore, p0 = params
        elif kernel == K_CROSS_ENTROPY_PROBS:
            p0, = params
        elif kernel == K_NLL:
            ignore, = params
        else:
            p0, p1 = params
        loss = np.empty((N, K), x.dtype) if want_none else None
        grad = None
        if grad_scale is not None:
            grad = out if out is not None else np.empty((N, C, K), x.dtype)
        cdef double scale = grad_scale if grad_scale is not None else 1.0
        total = self.run(x, t, w, ignore, p0, p1, loss, grad, scale, n_threads)
        return (None if want_none else total), loss, grad

    def fast(self, input, target, ignore_index, reduction, n_threads, out, bint want_grad):
        """The common call on (N, C) input with int64 class indices, or None."""
        if type(input) is not np.ndarray or type(target) is not np.ndarray:
            return None
        cdef int typenum = cnp.PyArray_TYPE(<cnp.ndarray>input)
        if typenum != cnp.NPY_FLOAT32 and typenum != cnp.NPY_FLOAT64:
            return None
        cdef cnp.ndarray x = <cnp.ndarray>input, t = <cnp.ndarray>target
        if (not plain_float(x, typenum) or x.ndim != 2 or t.ndim != 1
                or cnp.PyArray_TYPE(t) != cnp.NPY_INT64 or not cnp.PyArray_IS_C_CONTIGUOUS(t)
                or t.shape[0] != x.shape[0] or x.shape[1] == 0):
            return None
        if self.has_ignore and type(ignore_index) is not int:
            return None
        cdef int red = reduction_code(reduction), nt = thread_count(n_threads)
        if red < 0 or nt < 0:
            return None
        if want_grad and out is not None and not usable_out(out, x, typenum, t):
            return None
        cdef idx N = x.shape[0], C = x.shape[1]
        cdef int64_t ignore = ignore_index if self.has_ignore else 0
        cdef double count = 0
        cdef idx bad
        cdef bint has_ignore = self.has_ignore
        cdef const int64_t* tp = <const int64_t*>data(t)
        with nogil:
            bad = class_target_stats_c[double](tp, N, C, has_ignore, ignore, NULL, &count)
        if bad >= 0:
            return None
        cdef double divisor = count if self.has_ignore else N
        loss = cnp.PyArray_EMPTY(1, cnp.PyArray_DIMS(t), typenum, 0) if red == 2 else None
        grad = grad_buffer(out, x, typenum, want_grad)
        total = self.run(x, t, None, ignore, self.default_params[0], self.default_params[1],
                         loss, grad, mean_scale(red, divisor), nt)
        return fast_result(total, divisor, red, typenum, loss, grad, want_grad)


KERNELS = {
    "mse_loss": _Elementwise("mse_loss", K_MSE),
    "l1_loss": _Elementwise("l1_loss", K_L1),
    "huber_loss": _Elementwise("huber_loss", K_HUBER),
    "smooth_l1_loss": _Elementwise("smooth_l1_loss", K_SMOOTH_L1),
    "binary_cross_entropy": _Elementwise("binary_cross_entropy", K_BCE),
    "binary_cross_entropy_with_logits": _Elementwise("binary_cross_entropy_with_logits", K_BCE_LOGITS),
    "hinge_loss": _Elementwise("hinge_loss", K_HINGE),
    "squared_hinge_loss": _Elementwise("squared_hinge_loss", K_SQUARED_HINGE),
    "cross_entropy": _Classes("cross_entropy", K_CROSS_ENTROPY),
    "cross_entropy_probs": _Classes("cross_entropy", K_CROSS_ENTROPY_PROBS),
    "nll_loss": _Classes("nll_loss", K_NLL),
    "multi_margin_loss": _Classes("multi_margin_loss", K_MULTI_MARGIN),
}
