# cython: language_level=3
"""fastloss's compiled kernels (Cython + OpenMP)."""

cimport openmp

cdef extern from *:
    """
    #ifndef FASTLOSS_OPENMP
    #define FASTLOSS_OPENMP 0
    #endif
    """
    int FASTLOSS_OPENMP


def openmp_enabled():
    """Whether the kernels were compiled with OpenMP."""
    return bool(FASTLOSS_OPENMP)


def omp_max_threads():
    """omp_get_max_threads(): OMP_NUM_THREADS and threadpoolctl limits apply (1 without OpenMP)."""
    return openmp.omp_get_max_threads() if FASTLOSS_OPENMP else 1
