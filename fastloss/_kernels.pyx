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
    """
    int FASTLOSS_OPENMP
    int fl_omp_max_threads() nogil

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
        idx period
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


def omp_max_threads():
    """omp_get_max_threads(): OMP_NUM_THREADS and threadpoolctl limits apply (1 without OpenMP)."""
    return fl_omp_max_threads()


cdef inline void* data(object a) noexcept:
    return cnp.PyArray_DATA(<cnp.ndarray>a) if a is not None else NULL


cdef inline bint is_f32(cnp.ndarray a) noexcept:
    return cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT32


# ----------------------------------------------------------------------------- scanners


def first_outside_unit(cnp.ndarray a, int n_threads):
    cdef idx n = cnp.PyArray_SIZE(a), i
    cdef void* p = data(a)
    cdef bint f32 = is_f32(a)
    with nogil:
        if f32:
            i = first_outside_unit_c[float](<const float*>p, n, n_threads)
        else:
            i = first_outside_unit_c[double](<const double*>p, n, n_threads)
    return None if i < 0 else a.reshape(-1)[i].item()


def first_non_sign(cnp.ndarray a, int n_threads):
    cdef idx n = cnp.PyArray_SIZE(a), i
    cdef void* p = data(a)
    cdef bint f32 = is_f32(a)
    with nogil:
        if f32:
            i = first_non_sign_c[float](<const float*>p, n, n_threads)
        else:
            i = first_non_sign_c[double](<const double*>p, n, n_threads)
    return None if i < 0 else a.reshape(-1)[i].item()


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


# ----------------------------------------------------------------------------- kernels

# Weight runs shorter than this are tiled up to it, so the hot loop runs long (a scalar
# weight would otherwise make runs of one element).
cdef idx MIN_WEIGHT_RUN = 4096


cdef tuple _tile_weights(object w, object pw, idx n):
    """w and pw tiled to one common period P (a multiple of each length), at least
    MIN_WEIGHT_RUN long unless that exceeds n."""
    if w is None and pw is None:
        return None, None, 1
    cdef idx period = math.lcm(*[a.size for a in (w, pw) if a is not None])
    cdef idx reps = max(1, min(-(-MIN_WEIGHT_RUN // period), n // period))
    period *= reps
    if w is not None and w.size != period:
        w = np.tile(w, period // w.size)
    if pw is not None and pw.size != period:
        pw = np.tile(pw, period // pw.size)
    return w, pw, period


cdef class _Elementwise:
    """An elementwise kernel: see the backend contract in fastloss.numpy_backend."""

    cdef readonly int kernel

    def __init__(self, int kernel):
        self.kernel = kernel

    def __call__(self, cnp.ndarray x, cnp.ndarray t, w, pw, tuple params, bint want_none,
                 grad_scale, out, int n_threads):
        cdef idx n = cnp.PyArray_SIZE(x)
        cdef double prm[2]
        prm[0] = params[0] if len(params) > 0 else 0.0
        prm[1] = params[1] if len(params) > 1 else 0.0
        w, pw, period = _tile_weights(w, pw, n)
        loss = np.empty(n, x.dtype) if want_none else None
        grad = None
        if grad_scale is not None:
            grad = out if out is not None else np.empty(n, x.dtype)
        cdef double scale = grad_scale if grad_scale is not None else 1.0
        cdef double total
        cdef ElementwiseArgs[float] af
        cdef ElementwiseArgs[double] ad
        if is_f32(x):
            af.x, af.y = <const float*>data(x), <const float*>data(t)
            af.w, af.pw, af.period = <const float*>data(w), <const float*>data(pw), period
            af.loss, af.grad, af.scale, af.n = <float*>data(loss), <float*>data(grad), <float>scale, n
            with nogil:
                total = elementwise[float](self.kernel, af, prm, n_threads)
        else:
            ad.x, ad.y = <const double*>data(x), <const double*>data(t)
            ad.w, ad.pw, ad.period = <const double*>data(w), <const double*>data(pw), period
            ad.loss, ad.grad, ad.scale, ad.n = <double*>data(loss), <double*>data(grad), scale, n
            with nogil:
                total = elementwise[double](self.kernel, ad, prm, n_threads)
        return (None if want_none else total), loss, grad


cdef class _Classes:
    """A class kernel: see the backend contract in fastloss.numpy_backend."""

    cdef readonly int kernel

    def __init__(self, int kernel):
        self.kernel = kernel

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
        cdef bint probs = kernel == K_CROSS_ENTROPY_PROBS
        loss = np.empty((N, K), x.dtype) if want_none else None
        grad = None
        if grad_scale is not None:
            grad = out if out is not None else np.empty((N, C, K), x.dtype)
        cdef double scale = grad_scale if grad_scale is not None else 1.0
        cdef double total
        cdef ClassArgs[float] af
        cdef ClassArgs[double] ad
        cdef const int64_t* tp = NULL
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
        return (None if want_none else total), loss, grad


KERNELS = {
    "mse_loss": _Elementwise(K_MSE),
    "l1_loss": _Elementwise(K_L1),
    "huber_loss": _Elementwise(K_HUBER),
    "smooth_l1_loss": _Elementwise(K_SMOOTH_L1),
    "binary_cross_entropy": _Elementwise(K_BCE),
    "binary_cross_entropy_with_logits": _Elementwise(K_BCE_LOGITS),
    "hinge_loss": _Elementwise(K_HINGE),
    "squared_hinge_loss": _Elementwise(K_SQUARED_HINGE),
    "cross_entropy": _Classes(K_CROSS_ENTROPY),
    "cross_entropy_probs": _Classes(K_CROSS_ENTROPY_PROBS),
    "nll_loss": _Classes(K_NLL),
    "multi_margin_loss": _Classes(K_MULTI_MARGIN),
}
