"""The compiled backend: the names of the backend contract, from the Cython module.

Importing this fails with ImportError when the extension was not built; fastloss then
falls back to ``numpy_backend`` (see ``fastloss/__init__.py``)."""

from .kernels import (  # noqa: F401
    KERNELS,
    NAME,
    class_target_stats,
    float64_sum,
    first_negative,
    first_non_sign,
    first_outside_unit,
)
