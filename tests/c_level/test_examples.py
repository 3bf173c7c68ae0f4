"""The worked examples of examples/ build against the installed fastloss with the system C
compiler, run, and agree with the Python API bit for bit: the C program on libfastloss (from
the package and from CMake), the C program embedding Python, the Cython extension.

Skipped only when there is no C compiler (CI has one)."""

from __future__ import annotations

import importlib.util
import math
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

import fastloss
from helpers import assert_bitwise, compiled_api
from libfastloss_builds import bare_env

pytest.importorskip("fastloss.kernels", reason="the compiled kernels are not built")
# The examples call the compiled kernels: "the Python API" they match is the compiled
# backend's, also when FASTLOSS_BACKEND=numpy makes fastloss itself run on NumPy.
API = compiled_api()

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def c_compiler():
    for name in ((sysconfig.get_config_var("CC") or "").split()[:1] + ["cc", "gcc", "clang"]):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


CC = c_compiler()
needs_cc = pytest.mark.skipif(CC is None, reason="no C compiler on this machine")


def embed_flags() -> list[str]:
    """Compile and link flags of a C program embedding this Python: python3-config's
    (as the README says) when it sits next to this interpreter, else sysconfig's."""
    version = sysconfig.get_config_var("VERSION")
    config = Path(sys.executable).with_name(f"python{version}-config")
    if config.exists():
        out = subprocess.run([str(config), "--includes", "--ldflags", "--embed"],
                             capture_output=True, text=True, check=True).stdout
        return out.split()
    libdir = sysconfig.get_config_var("LIBDIR")
    flags = [f"-I{sysconfig.get_paths()['include']}", f"-L{libdir}", f"-Wl,-rpath,{libdir}",
             f"-lpython{sysconfig.get_config_var('LDVERSION')}"]
    return flags + (sysconfig.get_config_var("LIBS") or "").split() + ["-lm"]


def run(cmd, **kw):
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


# --------------------------------------------------------------------------- the C program


def build_demo(how: str, where: Path) -> Path:
    """The C example built as the README says: "embedded" (examples/c_program: Python
    embedded, fastloss.h), "wheel" (examples/c_library against the package's libfastloss,
    python -m fastloss config) or "cmake" (examples/c_library's CMake project on the
    CMake-installed libfastloss)."""
    exe = where / "fastloss_demo"
    if how == "embedded":
        source = EXAMPLES / "c_program" / "fastloss_demo.c"
        run([CC, "-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", str(source),
             f"-I{fastloss.get_include()}", *embed_flags(), "-o", str(exe)])
    elif how == "wheel":
        flags = run([sys.executable, "-m", "fastloss", "config", "--cflags", "--libs"]).split()
        run([CC, "-std=c11", "-O2", "-Wall", "-Wextra", "-Werror",
             str(EXAMPLES / "c_library" / "fastloss_demo.c"), *flags, "-o", str(exe)])
    else:
        from libfastloss_builds import cmake, cmake_install

        run([cmake(), "-S", str(EXAMPLES / "c_library"), "-B", str(where / "build"),
             f"-DCMAKE_PREFIX_PATH={cmake_install()}", "-DCMAKE_C_FLAGS=-Wall -Wextra -Werror"])
        run([cmake(), "--build", str(where / "build")])
        exe = where / "build" / "fastloss_demo"
    return exe


@pytest.fixture(scope="module", params=["embedded", "wheel", "cmake"])
def c_demo_output(tmp_path_factory, request):
    if CC is None:
        pytest.skip("no C compiler on this machine")
    exe = build_demo(request.param, tmp_path_factory.mktemp("c_program"))
    # the libfastloss programs run with no Python in their environment, nor linked
    env = None if request.param == "embedded" else bare_env()
    if env is not None:
        assert "libpython" not in run(["ldd", str(exe)])
    lines = run([str(exe)], env=env).splitlines()
    return {line.split()[0]: line.split()[1:] for line in lines}


def numbers(words):
    return np.array([float(w) for w in words])


@needs_cc
def test_c_program_bce_with_logits_matches_python(c_demo_output):
    logits = np.array([-2.0, 0.5, 3.0, 1.0, -0.25, 0.0, 40.0, -40.0, 2.5, -1.5, 0.75, -3.0]).reshape(4, 3)
    labels = np.array([0, 1, 1, 1, 0, 0.5, 1, 0, 1, 0, 1, 0]).reshape(4, 3)
    loss, grad = API.binary_cross_entropy_with_logits_grad(logits, labels, pos_weight=np.array([1.0, 2.0, 0.5]))
    assert_bitwise(np.float64(numbers(c_demo_output["bce_with_logits_loss"])[0]), loss)
    assert_bitwise(numbers(c_demo_output["bce_with_logits_grad"]), grad.reshape(-1))


@needs_cc
def test_c_program_cross_entropy_matches_python(c_demo_output):
    scores = np.array([2.0, -1.0, 0.5, 0.1, 0.2, 0.3, -3.0, 4.0, 1.0, 1.5, 1.5, -0.5]).reshape(4, 3)
    loss, grad = API.cross_entropy_grad(scores, np.array([0, 2, 1, 1]), weight=np.array([1.0, 0.5, 2.0]),
                                             label_smoothing=0.1)
    assert_bitwise(np.float64(numbers(c_demo_output["cross_entropy_loss"])[0]), loss)
    assert_bitwise(numbers(c_demo_output["cross_entropy_grad"]), grad.reshape(-1))


@needs_cc
def test_c_program_refused_call(c_demo_output):
    assert c_demo_output["refused"] == ["nan", "untouched"]


@needs_cc
@pytest.mark.parametrize("std", ["-std=c99", "-std=c11", "-x c++ -std=c++11"])
def test_header_compiles_and_checks_signatures(tmp_path, std):
    """fastloss.h compiles as C99, C11 and C++; under C11/C++11 it checks each documented
    typedef against the exported kernel, so a wrong typedef must fail to compile."""
    src = tmp_path / "use.c"
    src.write_text('#include "fastloss.h"\nint main(void) { return fastloss_import(); }\n')
    flags = [f for f in embed_flags() if f.startswith("-I")]
    cmd = [CC, *std.split(), "-fsyntax-only", "-Wall", "-Werror", f"-I{fastloss.get_include()}", *flags]
    if "c++" in std and shutil.which("g++"):
        cmd[0] = shutil.which("g++")
    elif "c++" in std:
        pytest.skip("no C++ compiler")
    run(cmd + [str(src)])
    if std == "-std=c99":
        return
    broken = tmp_path / "broken"
    shutil.copytree(fastloss.get_include(), broken)
    # the typedefs are generated into fastloss_losses.h (included by fastloss.h)
    header = (broken / "fastloss_losses.h").read_text()
    wrong = header.replace("Py_ssize_t N, Py_ssize_t C, int p", "Py_ssize_t N, Py_ssize_t C, double p", 1)
    assert wrong != header
    (broken / "fastloss_losses.h").write_text(wrong)
    result = subprocess.run(cmd[:-len(flags) - 1] + [f"-I{broken}", *flags, str(src)],
                            capture_output=True, text=True)
    assert result.returncode != 0 and "does not match" in result.stderr


# --------------------------------------------------------------------------- the Cython extension


@pytest.fixture(scope="module")
def linear_fit(tmp_path_factory):
    if CC is None:
        pytest.skip("no C compiler on this machine")
    pytest.importorskip("Cython")
    where = tmp_path_factory.mktemp("cython_extension")
    for name in ("linear_fit.pyx", "setup.py"):
        shutil.copy(EXAMPLES / "cython_extension" / name, where)
    run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=where,
        env={**os.environ, "CC": CC})
    built = next(where.glob("linear_fit*.so"), None) or next(where.glob("linear_fit*.pyd"))
    spec = importlib.util.spec_from_file_location("linear_fit", built)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fit_huber_in_python(X, y, delta, lr, steps):
    """The example's loop in Python, same operations in the same order, on the Python API."""
    n, d = X.shape
    w = np.zeros(d)
    history = []
    for _ in range(steps):
        pred = np.empty(n)
        for i in range(n):
            acc = 0.0
            for j in range(d):
                acc = acc + X[i, j] * w[j]
            pred[i] = acc
        loss, grad = API.huber_loss_grad(pred, y, delta=delta)
        history.append(loss)
        for j in range(d):
            acc = 0.0
            for i in range(n):
                acc = acc + X[i, j] * grad[i]
            w[j] = w[j] - lr * acc
    return w, np.array(history)


@needs_cc
def test_cython_extension_fit_matches_python_api(linear_fit):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + rng.standard_t(2, 120)  # heavy tails: Huber's case
    w, history = linear_fit.fit_huber(X, y, 1.0, 0.1, 40)
    w_ref, history_ref = fit_huber_in_python(X, y, 1.0, 0.1, 40)
    assert_bitwise(w, w_ref, "weights")
    assert_bitwise(history, history_ref, "loss history")
    assert history[-1] < 0.5 * history[0]  # and it does fit


@needs_cc
def test_cython_extension_cross_entropy(linear_fit):
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(64, 7)).astype(np.float32)
    labels = rng.integers(0, 7, 64)
    labels[::5] = -100
    grad = np.empty_like(logits)
    loss = linear_fit.cross_entropy_grad(logits, labels, grad, label_smoothing=0.05)
    expected_loss, expected_grad = API.cross_entropy_grad(logits, labels, label_smoothing=0.05)
    assert_bitwise(np.float32(loss), expected_loss)
    assert_bitwise(grad, expected_grad)
    labels[3] = 7
    grad[:] = 5
    assert math.isnan(linear_fit.cross_entropy_grad(logits, labels, grad))
    assert (grad == 5).all()
