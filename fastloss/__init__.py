"""fastloss: loss functions and their gradients in one fused, parallel, stable pass.

The losses follow ``torch.nn.functional`` (names, parameters, defaults and results); every
loss ``NAME`` has twins ``NAME_grad`` returning ``(loss, grad)`` and ``NAME_grad_hess``
returning ``(loss, grad, hess)`` (the Hessian's diagonal). The API reference is
docs/API.md (installed with the package as fastloss/API.md; ``python -m fastloss api``
prints it).

Backends: the compiled Cython/OpenMP backend when it imports, else the pure NumPy backend
(with one RuntimeWarning). ``FASTLOSS_BACKEND=numpy`` forces NumPy, ``=cython`` makes a
missing compiled backend an ImportError.
"""

from __future__ import annotations

import os
import warnings

from ._api import get_num_threads, make_public_api, set_num_threads
from ._registry import LOSSES

__version__ = "0.1.0"


def _select_backend():
    choice = os.environ.get("FASTLOSS_BACKEND", "").strip().lower()
    if choice not in ("", "numpy", "cython"):
        raise ImportError(f"FASTLOSS_BACKEND must be 'numpy' or 'cython', got {choice!r}")
    if choice != "numpy":
        try:
            from . import _cython_backend as backend

            return backend
        except ImportError as exc:
            if choice == "cython":
                raise ImportError(
                    f"FASTLOSS_BACKEND=cython but the compiled backend does not import: {exc}"
                ) from exc
            warnings.warn(
                f"fastloss: the compiled backend is not available ({exc}); using the pure "
                "NumPy backend, which is much slower. Reinstall with a C compiler to build it.",
                RuntimeWarning,
                stacklevel=3,
            )
    from . import _numpy_kernels as backend

    return backend


_backend = _select_backend()


def get_backend() -> str:
    """``"cython"`` or ``"numpy"``: the backend the functions of this module run on."""
    return _backend.NAME


def get_include() -> str:
    """The directory of ``fastloss.h``, the C header of the kernels (docs/API.md, "C and
    Cython level"), as ``numpy.get_include()``: pass it to the compiler with ``-I``."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "include")


def get_library() -> str:
    """The path of ``libfastloss.so``, the C library built with this installation (the same
    kernels as the compiled backend, no Python: ``include/libfastloss.h``; README, "From C").
    ``python -m fastloss config --cflags --libs`` prints the flags of a build against it.
    FileNotFoundError when it was not built (no compiler, not Linux: CMake builds it then)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib", "libfastloss.so")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist: this fastloss was installed without its C "
                                "library (built on Linux with a C++ compiler; or build it with CMake)")
    return path


globals().update(make_public_api(_backend))

__all__ = [
    *(name for loss in LOSSES for name in loss.functions),
    "get_backend",
    "get_library",
    "get_include",
    "get_num_threads",
    "set_num_threads",
]
