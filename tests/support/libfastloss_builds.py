"""libfastloss as its users get it, for the tests of the C library (tests/c_level).

* ``wheel_library()``: the copy installed with this fastloss (``fastloss.get_library()``),
  linked by setup.py from the extension's own kernel objects.
* ``cmake_install(...)``: the source tree built and installed with CMake exactly as the
  README's "From C" section says (``cmake -S . -B build && cmake --build build && cmake
  --install build``), into a directory of the system's temporary directory named by a digest
  of everything the build reads (CMakeLists.txt, cmake/, the C++ sources, the generated
  C level and header, the options, the compiler). A build takes minutes (the kernels are
  compiled for three instruction sets); the digest lets the suite's several runs on one
  machine (CI runs tests/c_level three times) share one build, and a changed source builds
  again. A lock file keeps concurrent test processes from building the same tree twice.

CMake comes from the ``test`` extra (PyPI's ``cmake``) where the system has none.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import fastloss

# The source tree: this checkout (the tests run from it; CMake builds what it holds).
ROOT = Path(__file__).resolve().parents[2]
BUILD_INPUTS = ["CMakeLists.txt", "cmake", "fastloss/csrc", "fastloss/_generated/c_level.cpp",
                "fastloss/_generated/kernel_table.hpp", "fastloss/include/libfastloss.h"]


def bare_env(**extra: str) -> dict:
    """The environment C programs on libfastloss run with: no Python anywhere (no PYTHON*
    variables, no virtualenv on PATH, no LD_LIBRARY_PATH: the libraries are found through the
    rpath), only FASTLOSS_SIMD passed on, the library's own cap of the instruction set (CI's
    baseline run sets it for the Python API the results are compared with)."""
    env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C"}
    env.update({k: os.environ[k] for k in ("FASTLOSS_SIMD",) if k in os.environ})
    return {**env, **extra}


def wheel_library() -> Path:
    return Path(fastloss.get_library())


def cmake() -> str:
    path = shutil.which("cmake")
    if path is None:
        raise RuntimeError("cmake is not installed: pip install -e '.[test]' installs it")
    return path


def compiler_version() -> str:
    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or "c++"
    return subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout


def _digest(options: dict[str, str]) -> str:
    h = hashlib.sha256()
    for name in BUILD_INPUTS:
        path = ROOT / name
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            if "__pycache__" in f.parts:
                continue
            h.update(str(f.relative_to(ROOT)).encode() + b"\0" + f.read_bytes() + b"\0")
    h.update(repr(sorted(options.items())).encode() + compiler_version().encode())
    return h.hexdigest()[:20]


def run(cmd, log: Path, **kw):
    with open(log, "a") as out:
        out.write(f"$ {' '.join(map(str, cmd))}\n")
        out.flush()
        result = subprocess.run([str(c) for c in cmd], stdout=out, stderr=subprocess.STDOUT, **kw)
    if result.returncode != 0:
        raise RuntimeError(f"{cmd[:3]} failed ({result.returncode}); its log:\n{log.read_text()[-6000:]}")


def cmake_install(**options: str) -> Path:
    """The install prefix of a CMake build of libfastloss with ``-D`` ``options`` (built once
    per content digest). The prefix holds include/, lib/ (the libraries, cmake/fastloss,
    pkgconfig/fastloss.pc)."""
    options = {k: str(v) for k, v in options.items()}
    base = Path(tempfile.gettempdir()) / f"fastloss-cmake-{os.getuid()}" / _digest(options)
    base.mkdir(parents=True, exist_ok=True)
    prefix, done = base / "prefix", base / "installed"
    with open(base / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(base / "build", ignore_errors=True)
            shutil.rmtree(prefix, ignore_errors=True)
            log = base / "build.log"
            log.write_text("")
            jobs = str(max(1, len(os.sched_getaffinity(0))))
            run([cmake(), "-S", ROOT, "-B", base / "build", f"-DCMAKE_INSTALL_PREFIX={prefix}",
                 *(f"-D{k}={v}" for k, v in options.items())], log)
            run([cmake(), "--build", base / "build", "--parallel", jobs], log)
            run([cmake(), "--install", base / "build"], log)
            done.write_text("")
    return prefix


def library_dir(prefix: Path) -> Path:
    """lib/ or lib64/ (GNUInstallDirs' choice on this system)."""
    for name in ("lib", "lib64"):
        if (prefix / name / "libfastloss.a").exists() or (prefix / name / "libfastloss.so").exists():
            return prefix / name
    raise FileNotFoundError(f"no libfastloss under {prefix}")
