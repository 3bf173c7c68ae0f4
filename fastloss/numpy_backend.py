"""fastloss computed with NumPy only: every public function of fastloss
(``fastloss.numpy_backend.mse_loss(...)`` and so on), whatever backend ``fastloss`` itself
uses. It is the readable reference and the benchmarks' baseline; the backend proper (the
kernels and the backend contract) is ``fastloss._numpy_kernels``.
"""

from __future__ import annotations

from . import _numpy_kernels as _backend
from ._api import make_public_api

NAME = _backend.NAME

_api = make_public_api(_backend)
for _fn in _api.values():
    _fn.__module__ = __name__
globals().update(_api)
PUBLIC_FUNCTIONS = tuple(_api)
__all__ = list(PUBLIC_FUNCTIONS)
del _fn
