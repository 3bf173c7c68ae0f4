"""Backends and the public surface: selection and its environment variable, the warning
of the fallback, the 22 functions and their registry-derived signatures, docstrings, and
agreement of the compiled backend with the NumPy backend."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastloss
import fastloss.numpy_backend
from cases import DTYPES, all_cases
from fastloss._registry import LOSSES, REDUCTIONS
from helpers import assert_bitwise, assert_grad_close, assert_value_close, loss_fn, rtol_for

LOSS_FUNCTIONS = [name for spec in LOSSES for name in spec.functions]
HELPERS = ["get_backend", "get_include", "get_library", "get_num_threads", "set_num_threads"]


def _compiled_importable() -> bool:
    try:
        import fastloss._cython_backend  # noqa: F401
    except ImportError:
        return False
    return True


COMPILED = _compiled_importable()


def _run(code, **env):
    full_env = {k: v for k, v in os.environ.items() if k != "FASTLOSS_BACKEND"}
    full_env.update(env)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full_env,
                          capture_output=True, text=True, timeout=120)


# The import of fastloss in a fresh interpreter, recording warnings; MISSING simulates a
# build without the compiled extension.
IMPORT = """
    import sys, warnings
    {missing}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import fastloss
    import numpy as np
    runtime = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    print(fastloss.get_backend(), len(caught), len(runtime))
    for w in runtime:
        print("WARNING", w.message)
    print("RESULT", fastloss.mse_loss(np.array([1.0, 2.0]), np.array([0.0, 0.0])))
"""
MISSING = "sys.modules['fastloss._cython_backend'] = None"


def _import(missing=False, **env):
    return _run(IMPORT.format(missing=MISSING if missing else ""), **env)


def test_get_backend_is_the_backend_that_imports():
    forced = os.environ.get("FASTLOSS_BACKEND", "").strip().lower()
    assert fastloss.get_backend() == ("numpy" if forced == "numpy" or not COMPILED else "cython")
    assert fastloss.numpy_backend.NAME == "numpy"


def test_default_import():
    """The compiled backend when it imports, silently; else NumPy with one RuntimeWarning."""
    proc = _import()
    assert proc.returncode == 0, proc.stderr
    backend, n_warnings, n_runtime = proc.stdout.split("\n")[0].split()
    assert backend == ("cython" if COMPILED else "numpy")
    assert int(n_runtime) == (0 if COMPILED else 1)
    assert "RESULT 2.5" in proc.stdout


def test_missing_extension_falls_back_with_one_warning():
    proc = _import(missing=True)
    assert proc.returncode == 0, proc.stderr
    backend, n_warnings, n_runtime = proc.stdout.split("\n")[0].split()
    assert backend == "numpy"
    assert int(n_runtime) == 1 and int(n_warnings) == 1, proc.stdout
    assert "NumPy" in proc.stdout
    assert "RESULT 2.5" in proc.stdout


@pytest.mark.parametrize("missing", [False, True], ids=["compiled-as-built", "compiled-missing"])
def test_fastloss_backend_numpy_forces_numpy_silently(missing):
    proc = _import(missing=missing, FASTLOSS_BACKEND="numpy")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[0].split() == ["numpy", "0", "0"]
    assert "RESULT 2.5" in proc.stdout


def test_fastloss_backend_cython_with_missing_extension_is_an_import_error():
    proc = _import(missing=True, FASTLOSS_BACKEND="cython")
    assert proc.returncode != 0
    assert "ImportError" in proc.stderr and "FASTLOSS_BACKEND" in proc.stderr


def test_fastloss_backend_cython_as_built():
    proc = _import(FASTLOSS_BACKEND="cython")
    if COMPILED:
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.split("\n")[0].split() == ["cython", "0", "0"]
    else:
        assert proc.returncode != 0 and "ImportError" in proc.stderr


def test_fastloss_backend_unknown_value_is_an_import_error():
    proc = _import(FASTLOSS_BACKEND="fortran")
    assert proc.returncode != 0
    assert "ImportError" in proc.stderr and "FASTLOSS_BACKEND" in proc.stderr


def test_numpy_backend_importable_on_its_own():
    proc = _run("""
        import warnings
        warnings.simplefilter("ignore", RuntimeWarning)
        from fastloss import numpy_backend as nb
        print(nb.NAME, len(nb.PUBLIC_FUNCTIONS), nb.mse_loss([1.0, 2.0], [0.0, 0.0]))
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["numpy", str(len(LOSS_FUNCTIONS)), "2.5"]


# --------------------------------------------------------------------------- surface


def test_public_names():
    assert sorted(fastloss.__all__) == sorted(LOSS_FUNCTIONS + HELPERS)
    assert sorted(fastloss.numpy_backend.PUBLIC_FUNCTIONS) == sorted(LOSS_FUNCTIONS)
    for name in fastloss.__all__:
        assert callable(getattr(fastloss, name)), name


def test_get_include_holds_the_c_header():
    include = fastloss.get_include()
    assert os.path.isabs(include) and os.path.isfile(os.path.join(include, "fastloss.h"))
    if _compiled_importable():  # the header Cython writes with the extension
        assert os.path.isfile(os.path.join(include, "kernels_api.h"))


def _expected_parameters(spec, grad):
    P = inspect.Parameter
    params = [P("input", P.POSITIONAL_OR_KEYWORD), P("target", P.POSITIONAL_OR_KEYWORD)]
    kw = []
    if spec.weight:
        kw.append(("weight", None))
    if spec.pos_weight:
        kw.append(("pos_weight", None))
    if spec.quantile:
        kw.append(("quantile", 0.5))
    if spec.ignore_index:
        kw.append(("ignore_index", -100))
    kw += [(p.name, p.default) for p in spec.params]
    kw += [("reduction", "mean"), ("n_threads", None)]
    if grad:
        kw.append(("out", None))
    if grad == 2 and spec.hessian_policy is not None:
        kw.append(("hessian", spec.hessian_policy))
    params += [P(name, P.KEYWORD_ONLY, default=default) for name, default in kw]
    return params


@pytest.mark.parametrize("module", [fastloss, fastloss.numpy_backend], ids=["fastloss", "numpy_backend"])
@pytest.mark.parametrize("grad", [0, 1, 2], ids=["loss", "grad", "grad_hess"])
@pytest.mark.parametrize("spec", LOSSES, ids=lambda s: s.name)
def test_signature_derived_from_the_registry(module, spec, grad):
    fn = getattr(module, spec.functions[grad])
    actual = list(inspect.signature(fn).parameters.values())
    expected = _expected_parameters(spec, grad)
    assert [(p.name, p.kind, p.default) for p in actual] == [(p.name, p.kind, p.default) for p in expected]
    for p in actual:  # defaults of the right type too (1 is not 1.0)
        e = next(q for q in expected if q.name == p.name)
        assert type(p.default) is type(e.default), p.name


@pytest.mark.parametrize("module", [fastloss, fastloss.numpy_backend], ids=["fastloss", "numpy_backend"])
def test_every_public_function_has_a_docstring(module):
    assert module.__doc__ and module.__doc__.strip()
    names = LOSS_FUNCTIONS + (HELPERS if module is fastloss else [])
    for name in names:
        doc = inspect.getdoc(getattr(module, name))
        assert doc and len(doc.strip()) > 20, name
    for spec in LOSSES:
        for name in spec.functions:
            doc = inspect.getdoc(getattr(module, name))
            assert spec.summary in doc, name
            for p in spec.params:
                assert p.name in doc, (name, p.name)
        assert "out" in inspect.getdoc(getattr(module, spec.name + "_grad"))
        assert "hess_out" in inspect.getdoc(getattr(module, spec.name + "_grad_hess"))


# --------------------------------------------------------------------------- agreement


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", all_cases(), ids=str)
def test_active_backend_agrees_with_numpy_backend(case, reduction, dtype):
    """fastloss's backend against fastloss.numpy_backend: to the tolerances of the
    contract when they differ, bitwise when fastloss runs on NumPy itself."""
    x, t, kw = case.generate(dtype)
    loss, grad = loss_fn(fastloss, case.loss, grad=True)(x, t, reduction=reduction, **kw)
    np_loss, np_grad = loss_fn(fastloss.numpy_backend, case.loss, grad=True)(x, t, reduction=reduction, **kw)
    if fastloss.get_backend() == "numpy":
        assert_bitwise(loss, np_loss)
        assert_bitwise(grad, np_grad)
    else:
        assert type(loss) is type(np_loss) and np.asarray(loss).dtype == np.asarray(np_loss).dtype
        assert np.shape(loss) == np.shape(np_loss)
        assert_value_close(loss, np_loss, rtol_for(dtype))
        assert_grad_close(grad, np_grad, rtol_for(dtype))
