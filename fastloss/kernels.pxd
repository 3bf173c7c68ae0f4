# cython: language_level=3
# The fused loss + gradient kernels of fastloss at the C level, for Cython extensions.
#
#     from fastloss.kernels cimport fl_mse_loss_grad_f64, FASTLOSS_MEAN
#
# Every kernel computes one loss and, when ``grad`` is not NULL, its gradient, in one fused
# pass over raw C-contiguous buffers, without the GIL and without Python objects, with the
# same deterministic results as the Python API (``fastloss.mse_loss_grad`` and so on). The
# same functions are exported to C programs through ``fastloss.h`` (``fastloss.get_include()``).
#
# Conventions (README, "Use from Cython and C")
# ---------------------------------------------
# * ``_f32`` kernels take float buffers, ``_f64`` double buffers; the reduced loss is returned
#   as a double (the Python API's float32 result is that value rounded to float32).
# * Elementwise losses: ``input``, ``target``, ``grad`` and ``losses`` hold ``n`` elements.
#   ``weight`` (or NULL) holds ``weight_len`` elements repeating over the input, element i
#   taking ``weight[i % weight_len]``; ``weight_len`` must divide ``n`` (``n`` for a full
#   weight, the last axis's length for a per-column weight). Likewise ``pos_weight``.
# * Class losses: ``input`` and ``grad`` are ``(N, C, K)`` C-contiguous (K = 1 for plain
#   ``(N, C)`` scores), class indices ``target`` and ``losses`` are ``(N, K)``; ``weight`` (or
#   NULL) holds one weight per class (C). ``fl_cross_entropy_probs_*`` takes class
#   probabilities shaped like the input instead of indices.
# * ``grad``: NULL for the loss alone; else receives the gradient of the reduced loss (it may
#   be ``input`` itself: in place). ``losses``: NULL, or receives the per-element (per-sample)
#   weighted losses, Python's ``reduction="none"``.
# * ``reduction``: ``FASTLOSS_MEAN`` or ``FASTLOSS_SUM`` (what the returned loss and the
#   gradient are of). ``n_threads``: 0 for OpenMP's default (``omp_get_max_threads()``), else
#   the number of threads (clamped to the CPUs the process may run on, and to the threads the
#   OS lets it create: results do not depend on it).
# * Errors: a bad argument (negative size, NULL buffer with a non-zero size, weight_len not
#   dividing n, an output overlapping an input other than ``grad == input``, an unknown
#   reduction, negative n_threads, a parameter outside its domain, a probability outside
#   [0, 1], a label not -1/+1, a class index outside [0, C) that is not ``ignore_index``)
#   makes the kernel return NaN without writing anything; so does scratch memory that cannot
#   be allocated (calls of more than 262144 elements need n / 4096 doubles). Sizes are
#   trusted: a buffer shorter than its size says is the caller's bug. A class index changed
#   by another thread during the call never makes the kernel read or write out of bounds:
#   that sample's loss and gradient row are NaN.

from libc.stdint cimport int64_t

cdef enum:
    FASTLOSS_MEAN = 0  # the returned loss is the mean (divisor as the Python API's "mean")
    FASTLOSS_SUM = 1   # the returned loss is the sum

# Elementwise losses
cdef double fl_mse_loss_grad_f32(const float* input, const float* target, const float* weight, Py_ssize_t weight_len, float* grad, float* losses, Py_ssize_t n, int reduction, int n_threads) noexcept nogil
cdef double fl_mse_loss_grad_f64(const double* input, const double* target, const double* weight, Py_ssize_t weight_len, double* grad, double* losses, Py_ssize_t n, int reduction, int n_threads) noexcept nogil
cdef double fl_l1_loss_grad_f32(const float* input, const float* target, const float* weight, Py_ssize_t weight_len, float* grad, float* losses, Py_ssize_t n, int reduction, int n_threads) noexcept nogil
cdef double fl_l1_loss_grad_f64(const double* input, const double* target, const double* weight, Py_ssize_t weight_len, double* grad, double* losses, Py_ssize_t n, int reduction, int n_threads) noexcept nogil
cdef double fl_huber_loss_grad_f32(const float* input, const float* target, const float* weight, Py_ssize_t weight_len, float* grad, float* losses, Py_ssize_t n, double delta, int reduction, int n_threads) noexcept nogil
cdef double fl_huber_loss_grad_f64(const double* input, const double* target, const double* weight, Py_ssize_t weight_len, double* grad, double* losses, Py_ssize_t n, double delta, int reduction, int n_threads) noexcept nogil
cdef double fl_smooth_l1_loss_grad_f32(const float* input, const float* target, float* grad, float* losses, Py_ssize_t n, double beta, int reduction, int n_threads) noexcept nogil
cdef double fl_smooth_l1_loss_grad_f64(const double* input, const double* target, double* grad, double* losses, Py_ssize_t n, double beta, int reduction, int n_threads) noexcept nogil
cdef double fl_binary_cross_entropy_grad_f32(const float* input, const float* target, const float* weight, Py_ssize_t weight_len, float* grad, float* losses, Py_ssize_t n, int reduction, int n_threads) noexcept nogil
cdef double fl_binary_cross_entropy_grad_f64(const double* input, const double* target, const double* weight, Py_ssize_t weight_len, double* grad, double* losses, Py_ssize_t n, int reduction, int n_threads) noexcept nogil
cdef double fl_binary_cross_entropy_with_logits_grad_f32(const float* input, const float* target, const float* weight, Py_ssize_t weight_len, const float* pos_weight, Py_ssize_t pos_weight_len, float* grad, float* losses, Py_ssize_t n, int reduction, int n_threads) noexcept nogil
cdef double fl_binary_cross_entropy_with_logits_grad_f64(const double* input, const double* target, const double* weight, Py_ssize_t weight_len, const double* pos_weight, Py_ssize_t pos_weight_len, double* grad, double* losses, Py_ssize_t n, int reduction, int n_threads) noexcept nogil
cdef double fl_hinge_loss_grad_f32(const float* input, const float* target, const float* weight, Py_ssize_t weight_len, float* grad, float* losses, Py_ssize_t n, double margin, int reduction, int n_threads) noexcept nogil
cdef double fl_hinge_loss_grad_f64(const double* input, const double* target, const double* weight, Py_ssize_t weight_len, double* grad, double* losses, Py_ssize_t n, double margin, int reduction, int n_threads) noexcept nogil
cdef double fl_squared_hinge_loss_grad_f32(const float* input, const float* target, const float* weight, Py_ssize_t weight_len, float* grad, float* losses, Py_ssize_t n, double margin, int reduction, int n_threads) noexcept nogil
cdef double fl_squared_hinge_loss_grad_f64(const double* input, const double* target, const double* weight, Py_ssize_t weight_len, double* grad, double* losses, Py_ssize_t n, double margin, int reduction, int n_threads) noexcept nogil

# Class losses
cdef double fl_cross_entropy_grad_f32(const float* input, const int64_t* target, const float* weight, float* grad, float* losses, Py_ssize_t N, Py_ssize_t C, Py_ssize_t K, int64_t ignore_index, double label_smoothing, int reduction, int n_threads) noexcept nogil
cdef double fl_cross_entropy_grad_f64(const double* input, const int64_t* target, const double* weight, double* grad, double* losses, Py_ssize_t N, Py_ssize_t C, Py_ssize_t K, int64_t ignore_index, double label_smoothing, int reduction, int n_threads) noexcept nogil
cdef double fl_cross_entropy_probs_grad_f32(const float* input, const float* target, const float* weight, float* grad, float* losses, Py_ssize_t N, Py_ssize_t C, Py_ssize_t K, double label_smoothing, int reduction, int n_threads) noexcept nogil
cdef double fl_cross_entropy_probs_grad_f64(const double* input, const double* target, const double* weight, double* grad, double* losses, Py_ssize_t N, Py_ssize_t C, Py_ssize_t K, double label_smoothing, int reduction, int n_threads) noexcept nogil
cdef double fl_nll_loss_grad_f32(const float* input, const int64_t* target, const float* weight, float* grad, float* losses, Py_ssize_t N, Py_ssize_t C, Py_ssize_t K, int64_t ignore_index, int reduction, int n_threads) noexcept nogil
cdef double fl_nll_loss_grad_f64(const double* input, const int64_t* target, const double* weight, double* grad, double* losses, Py_ssize_t N, Py_ssize_t C, Py_ssize_t K, int64_t ignore_index, int reduction, int n_threads) noexcept nogil
cdef double fl_multi_margin_loss_grad_f32(const float* input, const int64_t* target, const float* weight, float* grad, float* losses, Py_ssize_t N, Py_ssize_t C, int p, double margin, int reduction, int n_threads) noexcept nogil
cdef double fl_multi_margin_loss_grad_f64(const double* input, const int64_t* target, const double* weight, double* grad, double* losses, Py_ssize_t N, Py_ssize_t C, int p, double margin, int reduction, int n_threads) noexcept nogil
