# distutils: language = c++
# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""fastloss's compiled kernels: typed glue around the fused C++ kernels of csrc/.

Two faces, one set of kernels:

* the compiled backend of the Python API: ``NAME``, ``KERNELS``, ``float64_sum`` and the
  three scanners of the backend contract documented in ``fastloss.numpy_backend``. The
  front layer (``fastloss._api``) has already checked and coerced every operand, so this
  glue only takes raw pointers, releases the GIL and calls the kernel;
* the C level (end of this file): ``fl_<loss>_grad_f32/f64``, generated from the registry
  (``_generated/c_level.pxi``), declared in the generated ``kernels.pxd`` for Cython
  extensions (``cimport``) and exported through Cython's C-API for C programs
  (``include/fastloss.h``). They check their own arguments and give the Python API's results.

Nothing here is per loss: the kernels, their facts (csrc: the generated kernel table) and
their parameters all come from the registry (fastloss/_registry.py).
"""

cimport numpy as cnp
from libc.float cimport FLT_MAX
from libc.math cimport INFINITY, NAN, copysign, frexp, isfinite
from libc.stdint cimport INT64_MAX, INT64_MIN, int64_t, uintptr_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

import numpy as np

cnp.import_array()

cdef extern from *:
    """
    #ifndef FASTLOSS_OPENMP
    #define FASTLOSS_OPENMP 0
    #endif
    """
    int FASTLOSS_OPENMP

cdef extern from "Python.h":
    const Py_ssize_t PY_SSIZE_T_MAX

cdef extern from "dispatch.hpp" namespace "fl" nogil:
    ctypedef Py_ssize_t idx
    const int MAX_THREADS "fl::MAX_THREADS"
    cdef enum Divisor "fl::Divisor":
        DIVIDE_BY_COUNT "fl::DIVIDE_BY_COUNT"
        DIVIDE_BY_WEIGHT_SUM "fl::DIVIDE_BY_WEIGHT_SUM"
        DIVIDE_BY_TARGET_WEIGHT "fl::DIVIDE_BY_TARGET_WEIGHT"
    cdef enum Kind "fl::Kind":
        ELEMENTWISE "fl::ELEMENTWISE"
        CLASSES "fl::CLASSES"
    cdef struct Facts "fl::Facts":
        const char* name
        Kind kind
        Divisor divisor
        bint input_unit, target_unit, target_sign, target_nonneg, target_pos, operand, operand_required
        bint ignore_index, probabilities
        int n_params
    const Facts* FACTS "fl::FACTS"
    const int KERNEL_COUNT "fl::kernel::COUNT"
    bint params_ok "fl::params_ok"(int kernel, const double* p)
    bint operand_ok "fl::operand_ok"(int kernel, double v)
    enum: MAX_PARAMS_CAP "fl::MAX_PARAMS"
    const char* simd_name_c "fl::simd_name"()
    int detected_simd_level_c "fl::detected_simd_level"()
    void set_simd_cap_c "fl::set_simd_cap"(int level)
    bint in_forked_child_c "fl::in_forked_child"()
    int register_atfork "fl::register_atfork"()
    int omp_default_threads "fl::omp_default_threads"()

    cdef cppclass ElementwiseArgs[T]:
        const T* x
        const T* y
        const T* w
        const T* pw
        idx w_period
        idx pw_period
        T* loss
        T* grad
        T* hess
        T scale
        idx n
        const double* params
        double hess_const
        bint no_sum

    cdef cppclass ClassArgs[T]:
        const T* x
        const int64_t* target
        const T* probs
        const T* w
        idx N, C, K
        T* loss
        T* grad
        T* hess
        T scale
        int64_t ignore_index
        const double* params
        double hess_const

    # except +: a failed scratch allocation (std::bad_alloc, thrown before anything is
    # written) becomes MemoryError.
    double elementwise[T](int kernel, const ElementwiseArgs[T]& a, int n_threads) except +
    double classes[T](int kernel, const ClassArgs[T]& a, int n_threads) except +
    int cpu_limit_c "fl::cpu_limit"()
    void fail_allocations_c "fl::fail_allocations"(long k)
    void hold_helpers_c "fl::hold_helpers"(bint on)
    long helper_units_c "fl::helper_units"()
    idx first_outside_unit_c "fl::first_outside_unit"[T](const T* a, idx n, int n_threads)
    idx first_non_sign_c "fl::first_non_sign"[T](const T* a, idx n, int n_threads)
    idx first_negative_c "fl::first_negative"[T](const T* a, idx n, int n_threads, bint strict)
    double float64_sum_c "fl::float64_sum"[T](const T* a, idx n)
    idx class_target_stats_c "fl::class_target_stats"[T](const int64_t* t, idx n, idx C, bint has_ignore,
                                                        int64_t ignore_index, const T* w, double* weight_sum)

cdef extern from "reduction.hpp" namespace "fl" nogil:
    double mean_scale_c "fl::mean_scale"(int reduction, double divisor)
    double reduced_c "fl::reduced"(double total, double divisor, int reduction)

if register_atfork() != 0:
    raise ImportError("fastloss: pthread_atfork failed (cannot make forked children safe)")

NAME = "cython"
# The kernels read each class index once where they use it and check it there (a sample
# whose index another thread changed gets NaN, never an access out of bounds): the front
# layer need not copy the caller's indices.
CHECKS_INDICES_WHERE_USED = True


def openmp_enabled():
    """Whether the kernels were compiled with OpenMP."""
    return bool(FASTLOSS_OPENMP)


def simd_level():
    """The instruction set the kernels run with on this CPU (chosen at run time)."""
    return simd_name_c().decode()


SIMD_LEVELS = ("baseline", "avx2", "avx512")  # fl::simd_level()'s 0, 1, 2 (FASTLOSS_SIMD's names)


def _simd_levels():
    """The levels this build and CPU can run, lowest first (FASTLOSS_SIMD caps them)."""
    return SIMD_LEVELS[:detected_simd_level_c() + 1]


def _set_simd_cap(level):
    """Benchmark only (``python -m fastloss bench --simd``): run the following calls at the
    named lower level (one of _simd_levels()), or at the detected level again (None).
    Process-wide and not for results: the baseline level's exp and log can differ from the
    others' in the last bits, and the level a result was computed at is not recorded."""
    if level is None:
        set_simd_cap_c(-1)
        return
    if level not in _simd_levels():
        raise ValueError(f"level must be one of {_simd_levels()} or None, got {level!r}")
    set_simd_cap_c(SIMD_LEVELS.index(level))


def in_forked_child():
    """Whether this process is a fork of one that imported fastloss (kernels run serially)."""
    return in_forked_child_c()


def omp_max_threads():
    """omp_get_max_threads(): OMP_NUM_THREADS and threadpoolctl limits apply (1 without OpenMP)."""
    return omp_default_threads()


def cpu_limit():
    """The most threads a parallel call uses: the CPUs this process may run on (1 without
    OpenMP). Every call is clamped to it (fl::team_size)."""
    return cpu_limit_c()


def _fail_allocations(long k):
    """Test hook: the next k scratch allocations of the kernels fail (std::bad_alloc, which
    the Python API raises as MemoryError and the C level returns as NaN). 0 disarms it."""
    fail_allocations_c(k)


def _hold_helpers(bint on):
    """Test hook: while on, the helper threads of the pool join no call (as helpers the OS
    does not schedule on a busy machine); calls still complete, on their calling thread."""
    hold_helpers_c(on)


def _helper_units():
    """Test hook: how many units of work the pool's helper threads have run so far."""
    return helper_units_c()


cdef int _threads_set = 0  # fastloss.set_num_threads(n), mirrored here for the fast path


def set_default_threads(int n):
    """Mirror of fastloss.set_num_threads (0: follow OpenMP)."""
    global _threads_set
    _threads_set = n


cdef inline int default_threads() noexcept:
    return _threads_set if _threads_set > 0 else omp_default_threads()


# Calls on fewer elements than this keep the GIL: releasing and taking it back costs about
# 0.1 us a time, as much as the whole kernel of a 1000-element MSE, and a BCE call has three
# such sections (two value scans and the kernel). The work held under the GIL is then at most
# a few microseconds.
cdef idx NOGIL_FROM = 8192


cdef inline void* data(object a) noexcept:
    return cnp.PyArray_DATA(<cnp.ndarray>a) if a is not None else NULL


cdef inline bint is_f32(cnp.ndarray a) noexcept:
    return cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT32


# ----------------------------------------------------------------------------- scanners


cdef enum ValueRule:
    UNIT_INTERVAL  # values in [0, 1]
    SIGN           # values -1 or +1
    NONNEGATIVE    # values >= 0
    POSITIVE       # values > 0


cdef inline idx scan(int rule, bint f32, void* p, idx n, int n_threads) noexcept nogil:
    if rule == UNIT_INTERVAL:
        if f32:
            return first_outside_unit_c[float](<const float*>p, n, n_threads)
        return first_outside_unit_c[double](<const double*>p, n, n_threads)
    if rule == NONNEGATIVE or rule == POSITIVE:
        if f32:
            return first_negative_c[float](<const float*>p, n, n_threads, rule == POSITIVE)
        return first_negative_c[double](<const double*>p, n, n_threads, rule == POSITIVE)
    if f32:
        return first_non_sign_c[float](<const float*>p, n, n_threads)
    return first_non_sign_c[double](<const double*>p, n, n_threads)


cdef object first_breaking(int rule, cnp.ndarray a, int n_threads):
    """The first value of ``a`` breaking ``rule`` (NaN breaks both), or None."""
    cdef idx n = cnp.PyArray_SIZE(a), i
    cdef void* p = data(a)
    cdef bint f32 = is_f32(a)
    if n >= NOGIL_FROM:
        with nogil:
            i = scan(rule, f32, p, n, n_threads)
    else:
        i = scan(rule, f32, p, n, n_threads)
    return None if i < 0 else a.reshape(-1)[i].item()


def first_outside_unit(cnp.ndarray a, int n_threads):
    return first_breaking(UNIT_INTERVAL, a, n_threads)


def first_non_sign(cnp.ndarray a, int n_threads):
    return first_breaking(SIGN, a, n_threads)


def first_negative(cnp.ndarray a, int n_threads, bint strict):
    return first_breaking(POSITIVE if strict else NONNEGATIVE, a, n_threads)


cdef double float64_sum_of(cnp.ndarray a) noexcept:
    cdef idx n = cnp.PyArray_SIZE(a)
    cdef void* p = data(a)
    if is_f32(a):
        return float64_sum_c[float](<const float*>p, n)
    return float64_sum_c[double](<const double*>p, n)


def float64_sum(cnp.ndarray a):
    return float64_sum_of(a)


cdef inline idx target_stats(const int64_t* tp, idx n, idx n_classes, bint has_ignore, int64_t ignore,
                             const void* wp, bint f32, double* weight_sum) noexcept nogil:
    """fl::class_target_stats with class weights wp of float32 (f32) or float64 (or NULL)."""
    if f32:
        return class_target_stats_c[float](tp, n, n_classes, has_ignore, ignore, <const float*>wp, weight_sum)
    return class_target_stats_c[double](tp, n, n_classes, has_ignore, ignore, <const double*>wp, weight_sum)


def class_target_stats(cnp.ndarray t, idx n_classes, ignore_index, w):
    cdef idx n = cnp.PyArray_SIZE(t), i
    cdef bint has_ignore = ignore_index is not None
    cdef int64_t ignore = ignore_index if has_ignore else 0
    cdef const int64_t* tp = <const int64_t*>data(t)
    cdef const void* wp = data(w)
    cdef bint f32 = w is not None and is_f32(w)
    cdef double weight_sum = 0
    with nogil:
        i = target_stats(tp, n, n_classes, has_ignore, ignore, wp, f32, &weight_sum)
    if i >= 0:
        return int(t.reshape(-1)[i]), 0.0
    return None, weight_sum



# ----------------------------------------------------------------------------- fast path
# The common call (exact ndarrays, C-contiguous, one float dtype, matching shapes, weights and
# operands in their common forms, scalar parameters of their exact Python types, a valid `out`
# or none) goes straight to the kernel with the very
# arguments the front layer would pass, so results are bitwise those of the general path.
# Anything else, including every error, returns None and takes the general path
# (fastloss._api), which owns all checks and messages. Values are still scanned here.

# NumPy scalars made through the C API (np.float64(value) costs a Python call: ~40 ns of a
# small call's ~350 ns).
cdef extern from "numpy/arrayobject.h":
    object PyArray_Scalar(void* data, cnp.dtype descr, object base)  # descr borrowed

cdef cnp.dtype _f32_dtype = np.dtype(np.float32)
cdef cnp.dtype _f64_dtype = np.dtype(np.float64)


cdef inline bint plain_float(object a, int typenum) noexcept:
    """An exact ndarray, C-contiguous, of dtype typenum (float32 or float64), in native byte
    order (a '>f8' array has the same type number: its bytes are not the kernel's)."""
    return (type(a) is cnp.ndarray and cnp.PyArray_TYPE(<cnp.ndarray>a) == typenum
            and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>a)
            and cnp.PyArray_ISNOTSWAPPED(<cnp.ndarray>a))


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


cdef inline bint usable_out(object out, cnp.ndarray x, int typenum, cnp.ndarray other,
                            object weight=None, object operand=None) noexcept:
    """out can take the gradient (or the Hessian) directly: input's shape and dtype, writable,
    contiguous, overlapping no operand (the target, a weight array, a pos_weight or quantile
    array) except being the input itself."""
    if not plain_float(out, typenum):
        return False
    cdef cnp.ndarray o = <cnp.ndarray>out
    if not same_shape(o, x) or not cnp.PyArray_ISWRITEABLE(o) or overlaps(o, other):
        return False
    if weight is not None and overlaps(o, <cnp.ndarray>weight):
        return False
    if operand is not None and overlaps(o, <cnp.ndarray>operand):
        return False
    return not overlaps(o, x) or cnp.PyArray_DATA(o) == cnp.PyArray_DATA(x)


cdef inline bint usable_outs(object out, cnp.ndarray x, int typenum, cnp.ndarray other, object weight,
                             int want, object operand=None) noexcept:
    """``out`` of a call that wants the gradient (want 1: an array or None) or the gradient
    and the Hessian (want 2: None or a pair of usable arrays that do not overlap each other)."""
    if out is None or want == 0:
        return True
    if want == 1:
        return usable_out(out, x, typenum, other, weight, operand)
    if type(out) is not tuple or len(<tuple>out) != 2:
        return False
    g, h = (<tuple>out)[0], (<tuple>out)[1]
    return (usable_out(g, x, typenum, other, weight, operand)
            and usable_out(h, x, typenum, other, weight, operand)
            and not overlaps(<cnp.ndarray>g, <cnp.ndarray>h))


cdef object broadcast_block(object value, cnp.ndarray x, int typenum):
    """An elementwise weight or operand (pos_weight, quantile) in a form the fast path takes,
    as the kernel reads it (element i of the input weighed by element i % size), or None for
    any other form, which the general path's _elementwise_weight turns into the same block: a
    Python float (a one-element array: scalar_weight), a 0-d array (period 1), an array of the
    input's shape, or a 1-D array over the input's last axis (period shape[-1], the general
    path's block for that shape); arrays exact ndarrays of the compute dtype, C-contiguous,
    in native byte order."""
    cdef int nd = cnp.PyArray_NDIM(x)
    if type(value) is float:
        return scalar_weight(<double>value, typenum)
    if not plain_float(value, typenum):
        return None
    cdef cnp.ndarray v = <cnp.ndarray>value
    if same_shape(v, x) or cnp.PyArray_NDIM(v) == 0:
        return v
    if nd >= 1 and cnp.PyArray_NDIM(v) == 1 and cnp.PyArray_DIM(v, 0) == cnp.PyArray_DIM(x, nd - 1):
        return v
    return None


cdef extern from *:
    """
    // The smallest and the largest value of a[0..n) (n > 0), and whether any is NaN: one
    // vectorised pass (min and max ignore NaN here; it is reported on its own).
    template <typename T>
    static int fl_value_range(const T* a, Py_ssize_t n, double* lo, double* hi) {
        T mn = a[0], mx = a[0];
        int nan = 0;
    #pragma omp simd reduction(min : mn) reduction(max : mx) reduction(| : nan)
        for (Py_ssize_t i = 0; i < n; ++i) {
            const T v = a[i];
            mn = v < mn ? v : mn;
            mx = v > mx ? v : mx;
            nan |= v != v;
        }
        *lo = mn;
        *hi = mx;
        return nan;
    }
    """
    bint value_range "fl_value_range"[T](const T* a, idx n, double* lo, double* hi) nogil


cdef bint operand_values_ok(int kernel, cnp.ndarray v) noexcept:
    """Every value of an operand with a domain (quantile) inside it, by the C level's
    operand_ok, as the general path checks the float64 values (fastloss._api._checked_operand)
    before it rounds them to the compute dtype (float32 to double is exact). A domain is an
    interval (registry: Interval), so no NaN and both extremes inside means every value is."""
    cdef idx n = cnp.PyArray_SIZE(v)
    cdef double lo, hi
    cdef bint nan
    if n == 0:
        return True
    if is_f32(v):
        nan = value_range[float](<const float*>data(v), n, &lo, &hi)
    else:
        nan = value_range[double](<const double*>data(v), n, &lo, &hi)
    return not nan and operand_ok(kernel, lo) and operand_ok(kernel, hi)


cdef inline bint normal_reciprocal(double divisor, int typenum) noexcept:
    """Whether the general path keeps a weighted "mean"'s weights and divisor as they are
    (fastloss._api._normal_weight_scale: a divisor of 0, inf or NaN, or one whose reciprocal
    is comfortably normal in the compute dtype); the fast path declines the others, which
    that function rescales by a power of two."""
    cdef int exponent
    if divisor == 0 or not isfinite(divisor):
        return True
    frexp(divisor, &exponent)  # 2**(e - 1) <= |divisor| < 2**e
    if typenum == cnp.NPY_FLOAT32:  # np.finfo(np.float32): minexp -126, maxexp 128
        return -126 + 2 <= -exponent and 1 - exponent <= 128 - 2
    return -1022 + 2 <= -exponent and 1 - exponent <= 1024 - 2


cdef inline double hessian_const(object hessian) noexcept:
    """The Hessian policy as the kernels take it (0.0: "exact", else the positive constant),
    for the forms the fast path knows (an exact str "exact", an exact float in (0, inf)); -1
    for anything else, which the general path checks (fastloss._api._check_hessian)."""
    cdef double c
    if type(hessian) is str:
        return 0.0 if hessian == "exact" else -1.0
    if type(hessian) is float:
        c = hessian
        return c if c > 0 and c < INFINITY else -1.0
    return -1.0


cdef inline int reduction_code(object reduction) noexcept:
    # Exact str only (its comparison cannot raise); subclasses such as np.str_ take the
    # general path, which reads them by their characters (fastloss._api._check_reduction).
    # "mean", "sum" and "none" only: a loss's extra reductions (kl_div's "batchmean", a mean
    # by the batch size) take the general path too, which computes their divisor (and which
    # refuses them for every other loss).
    if type(reduction) is not str:
        return -1
    if reduction == "mean":
        return 0
    if reduction == "sum":
        return 1
    if reduction == "none":
        return 2
    return -1


cdef int max_threads = MAX_THREADS  # larger n_threads take the general path (clamped there)


def mean_scale(int reduction, double divisor):
    """The gradient's scale of a reduction (0 "mean", 1 "sum", 2 "none"): csrc/reduction.hpp,
    exported for the test that holds the Python general path to the same semantics."""
    return mean_scale_c(reduction, divisor)


def reduced(double total, double divisor, int reduction):
    """The reduced loss (csrc/reduction.hpp), exported for the same test."""
    return reduced_c(total, divisor, reduction)


def kernel_table():
    """The compiled kernel table (generated C++ from the registry), as a list of dicts, for
    the test that the build used the registry the Python code reads."""
    return [dict(name=FACTS[i].name.decode(), kind=int(FACTS[i].kind), divisor=int(FACTS[i].divisor),
                 input_unit=FACTS[i].input_unit, target_unit=FACTS[i].target_unit,
                 target_sign=FACTS[i].target_sign, target_nonneg=FACTS[i].target_nonneg,
                 target_pos=FACTS[i].target_pos, operand=FACTS[i].operand,
                 ignore_index=FACTS[i].ignore_index,
                 probabilities=FACTS[i].probabilities, n_params=FACTS[i].n_params)
            for i in range(KERNEL_COUNT)]


cdef inline int thread_count(object n_threads) noexcept:
    if n_threads is None:
        return default_threads()
    if type(n_threads) is int and 0 < n_threads <= max_threads:
        return n_threads
    return -1


cdef inline object grad_buffer(object out, cnp.ndarray x, int typenum, int want):
    """Where the fast path's gradient goes: the caller's out, else a new array like x."""
    if want == 0:
        return None
    if out is None:
        return empty_like_shape(x, typenum)
    return (<tuple>out)[0] if want == 2 else out


cdef inline object hess_buffer(object out, cnp.ndarray x, int typenum, int want):
    """Where the fast path's Hessian goes: out[1], else a new array like x."""
    if want != 2:
        return None
    return (<tuple>out)[1] if out is not None else empty_like_shape(x, typenum)


cdef object fast_result(double total, double divisor, int reduction, int typenum, object loss,
                        object grad, object hess, int want):
    result = loss if reduction == 2 else scalar_result(total, divisor, reduction, typenum)
    if want == 2:
        return result, grad, hess
    return (result, grad) if want == 1 else result


cdef object scalar_result(double total, double divisor, int reduction, int typenum):
    cdef double value = reduced_c(total, divisor, reduction)
    cdef float value32
    if typenum == cnp.NPY_FLOAT32:
        value32 = <float>value  # rounded to nearest, as np.float32(value)
        return PyArray_Scalar(&value32, _f32_dtype, None)
    return PyArray_Scalar(&value, _f64_dtype, None)


# ----------------------------------------------------------------------------- kernels

cdef inline cnp.ndarray empty_like_shape(cnp.ndarray a, int typenum):
    return cnp.PyArray_EMPTY(cnp.PyArray_NDIM(a), cnp.PyArray_DIMS(a), typenum, 0)


cdef object scalar_weight(double value, int typenum):
    """A Python float weight as the general path makes it: a one-element array of the
    compute dtype (period 1). None where the float32 cast would overflow (NumPy warns
    there: the general path keeps that)."""
    cdef cnp.npy_intp one = 1
    cdef cnp.ndarray w = cnp.PyArray_EMPTY(1, &one, typenum, 0)
    if typenum == cnp.NPY_FLOAT32:
        if isfinite(value) and not (-FLT_MAX <= value <= FLT_MAX):
            return None  # beyond float32: rounds to inf with NumPy's overflow warning
        (<float*>cnp.PyArray_DATA(w))[0] = <float>value
    else:
        (<double*>cnp.PyArray_DATA(w))[0] = value
    return w


cdef class _Elementwise:
    """An elementwise kernel: see the backend contract in fastloss._numpy_kernels."""

    cdef readonly int kernel
    cdef double default_params[MAX_PARAMS_CAP]
    cdef tuple kinds
    cdef bint input_unit, target_unit, target_sign, target_nonneg, target_pos, by_count

    def __init__(self, spec, int kernel):
        init_defaults(self.default_params, spec)
        self.kinds = param_kinds(spec)
        self.kernel = kernel
        self.by_count = FACTS[kernel].divisor == DIVIDE_BY_COUNT
        self.input_unit = FACTS[kernel].input_unit
        self.target_unit = FACTS[kernel].target_unit
        self.target_sign = FACTS[kernel].target_sign
        self.target_nonneg = FACTS[kernel].target_nonneg
        self.target_pos = FACTS[kernel].target_pos

    cdef double run(self, cnp.ndarray x, cnp.ndarray t, object w, object pw,
                    const double* prm, object loss, object grad, double scale, int n_threads,
                    object hess=None, double hess_const=0, bint no_sum=False):
        cdef idx n = cnp.PyArray_SIZE(x)
        cdef double total
        cdef ElementwiseArgs[float] af
        cdef ElementwiseArgs[double] ad
        if is_f32(x):
            af.x, af.y = <const float*>data(x), <const float*>data(t)
            af.w, af.pw = <const float*>data(w), <const float*>data(pw)
            af.w_period = w.size if w is not None else 0
            af.pw_period = pw.size if pw is not None else 0
            af.loss, af.grad, af.scale, af.n = <float*>data(loss), <float*>data(grad), <float>scale, n
            af.hess, af.hess_const = <float*>data(hess), hess_const
            af.params, af.no_sum = prm, no_sum
            if n >= NOGIL_FROM:
                with nogil:
                    total = elementwise[float](self.kernel, af, n_threads)
            else:
                total = elementwise[float](self.kernel, af, n_threads)
        else:
            ad.x, ad.y = <const double*>data(x), <const double*>data(t)
            ad.w, ad.pw = <const double*>data(w), <const double*>data(pw)
            ad.w_period = w.size if w is not None else 0
            ad.pw_period = pw.size if pw is not None else 0
            ad.loss, ad.grad, ad.scale, ad.n = <double*>data(loss), <double*>data(grad), scale, n
            ad.hess, ad.hess_const = <double*>data(hess), hess_const
            ad.params, ad.no_sum = prm, no_sum
            if n >= NOGIL_FROM:
                with nogil:
                    total = elementwise[double](self.kernel, ad, n_threads)
            else:
                total = elementwise[double](self.kernel, ad, n_threads)
        return total

    def __call__(self, cnp.ndarray x, cnp.ndarray t, w, pw, tuple params, bint want_none,
                 grad_scale, out, int n_threads, hessian=None):
        cdef idx n = cnp.PyArray_SIZE(x)
        cdef double prm[MAX_PARAMS_CAP]
        load_params(prm, params, 0)
        loss = np.empty(n, x.dtype) if want_none else None
        grad = hess = None
        if grad_scale is not None:
            grad = out if out is not None else np.empty(n, x.dtype)
        if hessian is not None:
            hess = hessian[0] if hessian[0] is not None else np.empty(n, x.dtype)
        cdef double scale = grad_scale if grad_scale is not None else 1.0
        total = self.run(x, t, w, pw, prm, loss, grad, scale, n_threads, hess,
                         hessian[1] if hessian is not None else 0.0)
        if hessian is not None:
            return (None if want_none else total), loss, grad, hess
        return (None if want_none else total), loss, grad

    def fast(self, input, target, weight, reduction, n_threads, out, int want, hessian, params=None,
             operand=None):
        """The common call, or None (see "fast path" above). ``want``: 0 the loss, 1 with the
        gradient, 2 with the gradient and the Hessian (``hessian``: the policy; "exact" for a
        loss without one), 3 the gradient and the Hessian alone, ``(grad, hess)``, without
        computing the loss (the boosting objectives; not for reduction "none"). ``weight``:
        None, a Python float, or an array of the input's shape or of its last axis, of the
        compute dtype (broadcast_block; a weighted "mean" divided by the weights' sum is
        declined where the general path rescales that divisor). ``operand``: the second
        operand (pos_weight, quantile) in the same forms; a quantile's values inside its domain,
        else the general path raises. ``params``: None (the registry's defaults) or the tuple
        of the loss's scalar parameters as passed (see user_params)."""
        if type(input) is not cnp.ndarray:
            return None
        cdef double prm_buf[MAX_PARAMS_CAP]
        cdef const double* prm = params_for(self.default_params, self.kinds, self.kernel, params, prm_buf)
        if prm == NULL:
            return None
        cdef int typenum = cnp.PyArray_TYPE(<cnp.ndarray>input)
        if typenum != cnp.NPY_FLOAT32 and typenum != cnp.NPY_FLOAT64:
            return None
        if not plain_float(input, typenum) or not plain_float(target, typenum):
            return None
        cdef cnp.ndarray x = <cnp.ndarray>input, t = <cnp.ndarray>target
        cdef int red = reduction_code(reduction), nt = thread_count(n_threads)
        if red < 0 or nt < 0 or not same_shape(x, t) or (want == 3 and red == 2):
            return None
        cdef bint no_sum = want == 3
        if no_sum:
            want = 2
        cdef double hc = hessian_const(hessian) if want == 2 else 0.0
        if hc < 0:
            return None
        cdef idx n = cnp.PyArray_SIZE(x)
        w = pw = None
        if weight is not None:
            w = broadcast_block(weight, x, typenum)
            if w is None:
                return None
        if operand is not None:
            pw = broadcast_block(operand, x, typenum)
            if pw is None:
                return None
            if FACTS[self.kernel].operand_required and not operand_values_ok(self.kernel, pw):
                return None
        elif FACTS[self.kernel].operand_required:
            return None  # (quantile) required: the general path refuses None
        if n == 0:
            w = pw = None  # nothing to weigh (the general path's rule: a period divides n)
        cdef double divisor = n
        if w is not None and red == 0 and not self.by_count:
            # a weighted "mean" divided by the weights' sum: the general path's divisor (the
            # float64 sum of the block, times its repeats), declined where that path would
            # rescale the weights (normal_reciprocal)
            divisor = float64_sum_of(<cnp.ndarray>w) * <double>(n // cnp.PyArray_SIZE(<cnp.ndarray>w))
            if not normal_reciprocal(divisor, typenum):
                return None
        if not usable_outs(out, x, typenum, t, w, want, pw):
            return None
        if self.input_unit and first_breaking(UNIT_INTERVAL, x, nt) is not None:
            return None
        if self.target_unit and first_breaking(UNIT_INTERVAL, t, nt) is not None:
            return None
        if self.target_sign and first_breaking(SIGN, t, nt) is not None:
            return None
        if self.target_nonneg and first_breaking(NONNEGATIVE, t, nt) is not None:
            return None
        if self.target_pos and first_breaking(POSITIVE, t, nt) is not None:
            return None
        loss = empty_like_shape(x, typenum) if red == 2 else None
        grad = grad_buffer(out, x, typenum, want)
        hess = hess_buffer(out, x, typenum, want)
        total = self.run(x, t, w, pw, prm, loss, grad, mean_scale_c(red, divisor), nt, hess, hc, no_sum)
        if no_sum:
            return grad, hess
        return fast_result(total, divisor, red, typenum, loss, grad, hess, want)


cdef class _Classes:
    """A class kernel: see the backend contract in fastloss._numpy_kernels."""

    cdef readonly int kernel
    cdef double default_params[MAX_PARAMS_CAP]
    cdef tuple kinds
    cdef bint has_ignore, by_target_weight

    def __init__(self, spec, int kernel):
        init_defaults(self.default_params, spec)
        self.kinds = param_kinds(spec)
        self.kernel = kernel
        self.has_ignore = FACTS[kernel].ignore_index
        self.by_target_weight = FACTS[kernel].divisor == DIVIDE_BY_TARGET_WEIGHT

    cdef double run(self, cnp.ndarray x, object t, object w, int64_t ignore, const double* prm,
                    object loss, object grad, double scale, int n_threads, object hess=None,
                    double hess_const=0):
        cdef idx N = x.shape[0], C = x.shape[1], K = x.shape[2] if x.ndim == 3 else 1
        cdef int kernel = self.kernel
        cdef bint probs = FACTS[kernel].probabilities
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
            af.hess, af.hess_const = <float*>data(hess), hess_const
            af.ignore_index, af.params = ignore, prm
            if N * C * K >= NOGIL_FROM:
                with nogil:
                    total = classes[float](kernel, af, n_threads)
            else:
                total = classes[float](kernel, af, n_threads)
        else:
            ad.x, ad.target, ad.w = <const double*>data(x), tp, <const double*>data(w)
            ad.probs = <const double*>data(t) if probs else NULL
            ad.N, ad.C, ad.K = N, C, K
            ad.loss, ad.grad, ad.scale = <double*>data(loss), <double*>data(grad), scale
            ad.hess, ad.hess_const = <double*>data(hess), hess_const
            ad.ignore_index, ad.params = ignore, prm
            if N * C * K >= NOGIL_FROM:
                with nogil:
                    total = classes[double](kernel, ad, n_threads)
            else:
                total = classes[double](kernel, ad, n_threads)
        return total

    def __call__(self, cnp.ndarray x, cnp.ndarray t, w, pw, tuple params, bint want_none,
                 grad_scale, out, int n_threads, hessian=None):
        cdef idx N = x.shape[0], C = x.shape[1], K = x.shape[2]
        cdef int64_t ignore = params[0] if self.has_ignore else 0
        cdef double prm[MAX_PARAMS_CAP]
        # params as the front layer passes them: (ignore_index, *registry params) or the
        # registry params
        load_params(prm, params, 1 if self.has_ignore else 0)
        loss = np.empty((N, K), x.dtype) if want_none else None
        grad = hess = None
        if grad_scale is not None:
            grad = out if out is not None else np.empty((N, C, K), x.dtype)
        if hessian is not None:
            hess = hessian[0] if hessian[0] is not None else np.empty((N, C, K), x.dtype)
        cdef double scale = grad_scale if grad_scale is not None else 1.0
        total = self.run(x, t, w, ignore, prm, loss, grad, scale, n_threads, hess,
                         hessian[1] if hessian is not None else 0.0)
        if hessian is not None:
            return (None if want_none else total), loss, grad, hess
        return (None if want_none else total), loss, grad

    def fast(self, input, target, ignore_index, reduction, n_threads, out, int want, hessian, params=None,
             weight=None):
        """The common call on (N, C) input with int64 class indices, or None (``want``,
        ``hessian`` and ``params`` as for the elementwise kernels). ``weight``: None or the
        class weights, a 1-D array of C values of the compute dtype (exact ndarray,
        C-contiguous, native order); a weighted "mean" whose divisor (the targets' weight sum)
        the general path would rescale (normal_reciprocal) is declined."""
        if type(input) is not cnp.ndarray or type(target) is not cnp.ndarray:
            return None
        cdef double prm_buf[MAX_PARAMS_CAP]
        cdef const double* prm = params_for(self.default_params, self.kinds, self.kernel, params, prm_buf)
        if prm == NULL:
            return None
        cdef int typenum = cnp.PyArray_TYPE(<cnp.ndarray>input)
        if typenum != cnp.NPY_FLOAT32 and typenum != cnp.NPY_FLOAT64:
            return None
        cdef cnp.ndarray x = <cnp.ndarray>input, t = <cnp.ndarray>target
        if (not plain_float(x, typenum) or x.ndim != 2 or t.ndim != 1
                or cnp.PyArray_TYPE(t) != cnp.NPY_INT64 or not cnp.PyArray_IS_C_CONTIGUOUS(t)
                or not cnp.PyArray_ISNOTSWAPPED(t)
                or t.shape[0] != x.shape[0] or x.shape[1] == 0):
            return None
        if self.has_ignore and (type(ignore_index) is not int
                                or not INT64_MIN <= ignore_index <= INT64_MAX):
            return None  # the general path refuses it with its message
        cdef int red = reduction_code(reduction), nt = thread_count(n_threads)
        if red < 0 or nt < 0 or (want == 3 and red == 2):
            return None
        cdef bint no_loss = want == 3  # (the class kernels compute the loss sum anyway)
        if no_loss:
            want = 2
        cdef double hc = hessian_const(hessian) if want == 2 else 0.0
        if hc < 0:
            return None
        cdef idx N = x.shape[0], C = x.shape[1]
        if weight is not None and not (plain_float(weight, typenum) and cnp.PyArray_NDIM(<cnp.ndarray>weight) == 1
                                       and cnp.PyArray_DIM(<cnp.ndarray>weight, 0) == C):
            return None
        if not usable_outs(out, x, typenum, t, weight, want):
            return None
        cdef const void* wp = data(weight)
        cdef int64_t ignore = ignore_index if self.has_ignore else 0
        cdef double count = 0
        cdef idx bad
        cdef bint has_ignore = self.has_ignore
        cdef const int64_t* tp = <const int64_t*>data(t)
        cdef bint f32 = typenum == cnp.NPY_FLOAT32
        # (the general path's backend.class_target_stats: the same function, the same sum)
        if N * C >= NOGIL_FROM:
            with nogil:
                bad = target_stats(tp, N, C, has_ignore, ignore, wp, f32, &count)
        else:
            bad = target_stats(tp, N, C, has_ignore, ignore, wp, f32, &count)
        if bad >= 0:
            return None
        cdef double divisor = count if self.by_target_weight else N
        if weight is not None and red == 0 and self.by_target_weight and not normal_reciprocal(divisor, typenum):
            return None
        loss = cnp.PyArray_EMPTY(1, cnp.PyArray_DIMS(t), typenum, 0) if red == 2 else None
        grad = grad_buffer(out, x, typenum, want)
        hess = hess_buffer(out, x, typenum, want)
        total = self.run(x, t, weight, ignore, prm, loss, grad,
                         mean_scale_c(red, divisor), nt, hess, hc)
        if no_loss:
            return grad, hess
        return fast_result(total, divisor, red, typenum, loss, grad, hess, want)


cdef void init_defaults(double* prm, spec):
    """A kernel's default parameters, registry order (the fast path runs with these)."""
    load_params(prm, tuple(p.default for p in spec.params), 0)


cdef tuple param_kinds(spec):
    """The Python type each scalar parameter must have exactly for the fast path to take it
    (float, int or bool: the registry's ``Param.type``), registry order."""
    return tuple(p.type for p in spec.params)


cdef double INT_EXACT = 9007199254740992.0  # 2**53: an int up to this converts to double exactly


cdef const double* params_for(const double* defaults, tuple kinds, int kernel, object params, double* buf):
    """The parameters a fast call runs with: ``defaults`` when ``params`` is None, else
    ``params`` loaded into ``buf`` (user_params), or NULL when the fast path declines them."""
    if params is None:
        return defaults
    return buf if user_params(kinds, kernel, params, buf) else NULL


cdef bint user_params(tuple kinds, int kernel, object params, double* prm):
    """The parameters a caller passed, into prm as the kernel reads them, or False for any
    value the fast path leaves to the general one: a value whose type is not exactly the
    parameter's (a float parameter takes a Python float, an int one a Python int, a bool
    one a Python bool; NumPy scalars and subclasses go to the general path, which converts
    them), an int beyond 2**53, or a value outside the parameter's domain (params_ok, the
    C level's check, generated from the same registry domains as the general path's): the
    general path raises its error for those. The accepted values are what the general path
    loads (``float(v)``, ``int(v)``, ``bool(v)`` as a double), so the bits are the same."""
    if type(params) is not tuple or len(<tuple>params) != len(kinds):
        return False
    cdef Py_ssize_t i, n = len(kinds)
    for i in range(n):
        v = (<tuple>params)[i]
        kind = kinds[i]
        if type(v) is not kind:
            return False
        if kind is float:
            prm[i] = <double>v
        elif kind is bool:
            prm[i] = 1.0 if v else 0.0
        else:
            if not -INT_EXACT <= v <= INT_EXACT:
                return False
            prm[i] = <double>v
    for i in range(n, MAX_PARAMS_CAP):
        prm[i] = 0.0
    return params_ok(kernel, prm)


cdef void load_params(double* prm, tuple params, int first):
    cdef int i
    for i in range(MAX_PARAMS_CAP):
        prm[i] = params[first + i] if first + i < len(params) else 0.0


def _kernels():
    from . import _registry

    if len(_registry.KERNELS) != KERNEL_COUNT or any(
            FACTS[i].name.decode() != k.name for i, k in enumerate(_registry.KERNELS)):
        raise ImportError("fastloss.kernels was built from another registry than fastloss/_registry.py: "
                          "rebuild it (pip install -e .)")
    if _registry.MAX_PARAMS > MAX_PARAMS_CAP:
        raise ImportError("fastloss.kernels: the registry has more parameters than MAX_PARAMS_CAP")
    return {k.name: (_Elementwise if k.loss.kind == "elementwise" else _Classes)(k.loss, i)
            for i, k in enumerate(_registry.KERNELS)}


KERNELS = _kernels()


# ----------------------------------------------------------------------------- the C level
# fl_<loss>_grad_f32 / _f64, generated from the registry (_generated/c_level.pxi): declared
# in kernels.pxd (for `cimport`) and exported with `cdef api` (include/fastloss.h, for C
# programs that embed Python). Each forwards to the C library's function of the same name
# (_generated/c_level.cpp, the very code of libfastloss, included with FASTLOSS_PRIVATE): one
# call of fl::capi (csrc/capi.hpp), which checks every argument it
# can check before reading or writing any element and, on a bad one, returns NaN having
# written nothing; then it runs the very kernel call of the Python API (same divisor, gradient
# scale and weight period), so results are bitwise those of the Python functions; a float32
# loss returned here as a double rounds to the Python API's float32 value.

include "_generated/c_level.pxi"
