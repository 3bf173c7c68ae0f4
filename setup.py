"""Build of fastloss's compiled backend (Cython + OpenMP).

* OpenMP is probed by compiling and linking a tiny program; without it the kernels are
  built serial (still correct, still deterministic).
* Portable by default: no -march=native, no -ffast-math (it would break NaN/inf
  semantics). -fno-math-errno only stops libm from setting errno, which lets the compiler
  vectorize calls to exp/log; results are unchanged.
* The extension is optional: without a compiler or Cython the package still installs and
  runs on its pure NumPy backend (with a RuntimeWarning on import).
"""

import os
import sys
import tempfile
import textwrap

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

OPENMP_PROBE = textwrap.dedent(
    """
    #include <omp.h>
    int main(void) {
        int n = 0;
        #pragma omp parallel reduction(+:n)
        n += 1;
        return n > 0 ? 0 : 1;
    }
    """
)

# -ffp-contract=off: no fused multiply-add contraction by the compiler (the kernels fuse where
# they choose: vm::mad), so a loss computed with or without
# its gradient (different loops) has the same bits.
BASE_FLAGS = ["-O3", "-std=c++17", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off", "-fno-semantic-interposition"]


def _compiles(compiler, source, flags):
    """Whether ``source`` compiles and links with ``flags``."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "probe.c")
        with open(path, "w") as f:
            f.write(source)
        try:
            objects = compiler.compile([path], output_dir=tmp, extra_postargs=flags)
            compiler.link_executable(objects, "probe", output_dir=tmp, extra_postargs=flags)
        except Exception:
            return False
    return True


class BuildExt(build_ext):
    def build_extensions(self):
        unix = self.compiler.compiler_type == "unix"
        flags = BASE_FLAGS if unix else ["/O2"]
        omp = ["-fopenmp"] if unix else ["/openmp"]
        use_openmp = os.environ.get("FASTLOSS_NO_OPENMP") != "1" and _compiles(
            self.compiler, OPENMP_PROBE, omp
        )
        print(f"fastloss build: OpenMP {'on' if use_openmp else 'OFF (serial kernels)'}", file=sys.stderr)
        for ext in self.extensions:
            # Optional: a failed compile leaves the NumPy backend (cythonize drops the flag
            # given to Extension, so it is set here).
            ext.optional = True
            # Without OpenMP, -fopenmp-simd still honours the kernels' `omp simd` loops.
            simd_only = ["-fopenmp-simd"] if unix else []
            ext.extra_compile_args = flags + (omp if use_openmp else simd_only)
            ext.extra_link_args = omp if use_openmp else []
            ext.define_macros = [("FASTLOSS_OPENMP", "1" if use_openmp else "0")]
        super().build_extensions()


def extensions():
    try:
        import numpy  # noqa: F401
        from Cython.Build import cythonize
    except ImportError:
        print("fastloss build: Cython missing, installing the NumPy backend only", file=sys.stderr)
        return []
    import numpy

    ext = Extension(
        "fastloss.kernels",
        ["fastloss/kernels.pyx"],
        depends=["fastloss/_kernels.hpp", "fastloss/_capi.hpp", "fastloss/_kernels_impl.hpp", "fastloss/_vecmath.hpp"],
        include_dirs=[numpy.get_include(), "fastloss"],
        language="c++",
    )
    return cythonize(
        [ext],
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    )


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExt})
