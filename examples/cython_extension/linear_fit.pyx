# cython: language_level=3, boundscheck=False, wraparound=False
"""A worked example: a Cython extension that cimports fastloss's kernels.

``fit_huber`` fits a linear model y ~ X @ w by plain gradient descent on the Huber loss.
Every step (prediction, fused Huber loss + gradient, back-propagation to w, update) runs
in C without the GIL: no Python object is touched inside the loop.

``cross_entropy_grad`` shows the class kernels on a float32 batch of logits.
"""

from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc

from fastloss.kernels cimport (FASTLOSS_MEAN, fl_cross_entropy_grad_f32,
                               fl_huber_loss_grad_f64)

import numpy as np


def fit_huber(const double[:, ::1] X, const double[::1] y, double delta, double lr, int steps,
              int n_threads=0):
    """Gradient descent on mean Huber loss; returns (weights, loss of each step)."""
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1], i, j, s
    if y.shape[0] != n:
        raise ValueError(f"y must have {n} elements, got {y.shape[0]}")
    w_arr = np.zeros(d)
    losses_arr = np.empty(steps)
    cdef double[::1] w = w_arr, history = losses_arr
    cdef double* pred = <double*>malloc(n * sizeof(double))
    cdef double* grad = <double*>malloc(n * sizeof(double))
    cdef double acc
    if pred == NULL or grad == NULL:
        free(pred)
        free(grad)
        raise MemoryError()
    with nogil:
        for s in range(steps):
            for i in range(n):  # pred = X @ w
                acc = 0
                for j in range(d):
                    acc = acc + X[i, j] * w[j]
                pred[i] = acc
            # loss and d(loss)/d(pred) in one fused pass
            history[s] = fl_huber_loss_grad_f64(pred, &y[0], NULL, 0, grad, NULL, n, delta,
                                                FASTLOSS_MEAN, n_threads)
            for j in range(d):  # d(loss)/dw = X.T @ grad
                acc = 0
                for i in range(n):
                    acc = acc + X[i, j] * grad[i]
                w[j] = w[j] - lr * acc
    free(pred)
    free(grad)
    return w_arr, losses_arr


def cross_entropy_grad(float[:, ::1] logits, const int64_t[::1] labels, float[:, ::1] grad,
                       int64_t ignore_index=-100, double label_smoothing=0.0):
    """Mean softmax cross-entropy of (N, C) logits and its gradient, written into grad.
    A refused argument (say, a label outside [0, C)) comes back as NaN, grad untouched."""
    cdef Py_ssize_t N = logits.shape[0], C = logits.shape[1]
    if labels.shape[0] != N or grad.shape[0] != N or grad.shape[1] != C:
        raise ValueError("labels must be (N,) and grad (N, C) for logits of shape (N, C)")
    cdef double loss
    with nogil:
        loss = fl_cross_entropy_grad_f32(&logits[0, 0], &labels[0], NULL, &grad[0, 0], NULL,
                                         N, C, 1, ignore_index, label_smoothing, FASTLOSS_MEAN, 0)
    return loss
