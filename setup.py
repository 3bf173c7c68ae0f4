"""Build of fastloss's compiled backend (Cython + C++ + OpenMP).

Why setuptools (and not meson-python or scikit-build): one extension module, a handful of
C++ files and a code generator in pure Python; setuptools needs nothing beyond what pip's
build isolation installs (pyproject.toml) and keeps ``pip install -e .`` working. What it
lacks is added here, in ``BuildExt``:

* The generator first: ``fastloss/_codegen.py`` writes every file that restates the registry
  (kernel table, C-level functions, kernels.pxd, C header, type stubs, docs tables), only
  where its text changed.
* Translation units compiled in parallel: the kernels once per instruction set
  (csrc/isa_baseline.cpp, isa_avx2.cpp, isa_avx512.cpp), the run-time services
  (csrc/runtime.cpp) and the Cython glue, on as many jobs as the CPUs this process may use
  (``FASTLOSS_BUILD_JOBS`` overrides).
* Incremental: objects are kept in ``build/fastloss-objects/`` (outside the temporary
  directories of pip's editable builds) and an object is compiled again only when its
  source, a header it includes (followed recursively), or the compile command changed.
* No debug information unless ``FASTLOSS_DEBUG=1`` (``-g0`` after Python's own ``-g``).
* OpenMP is probed by compiling and linking a tiny program; without it the kernels are
  built serial (still correct, still deterministic).
* Portable by default: no -march=native (the instruction-set units choose their targets
  with pragmas and are dispatched at run time), no -ffast-math (it would break NaN/inf
  semantics). -fno-math-errno only stops libm from setting errno, which lets the compiler
  vectorize calls to exp/log; results are unchanged.
* The extension is optional: without a compiler or Cython the package still installs and
  runs on its pure NumPy backend (with a RuntimeWarning on import).
* The C library: ``fastloss/lib/libfastloss.so`` (Linux) is linked from the extension's own
  kernel objects (runtime.cpp, isa_*.cpp) and the C level (_generated/c_level.cpp,
  csrc/library.cpp), exporting only the functions of ``include/libfastloss.h``
  (csrc/libfastloss.map); ``python -m fastloss config`` prints how to build against it.
  CMakeLists.txt builds the same library from the same sources without Python.
"""

import hashlib
import importlib.util
import os
import re
import sys
import tempfile
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
CSRC = Path("fastloss/csrc")
GENERATED = Path("fastloss/_generated")
INCLUDE = Path("fastloss/include")
OBJECT_CACHE = ROOT / "build" / "fastloss-objects"

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

# The compile flags, with their reasons: fastloss/csrc/compile_flags.txt (CMakeLists.txt reads
# the same file).
BASE_FLAGS = [line.strip() for line in (ROOT / CSRC / "compile_flags.txt").read_text().splitlines()
              if line.startswith("-")]


def run_generator():
    spec = importlib.util.spec_from_file_location("_fastloss_codegen", ROOT / "fastloss" / "_codegen.py")
    codegen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(codegen)
    for path in codegen.generate():
        print(f"fastloss build: generated {path.relative_to(ROOT)}", file=sys.stderr)
    return codegen


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


_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def included_files(source, search, seen=None):
    """The project files ``source`` includes with #include "...", recursively."""
    seen = set() if seen is None else seen
    try:
        text = Path(source).read_text(errors="replace")
    except OSError:
        return seen
    for name in _INCLUDE.findall(text):
        for directory in [Path(source).parent, *search]:
            candidate = (directory / name).resolve()
            if candidate.is_file() and candidate.is_relative_to(ROOT):
                if candidate not in seen:
                    seen.add(candidate)
                    included_files(candidate, search, seen)
                break
    return seen


def build_jobs():
    env = os.environ.get("FASTLOSS_BUILD_JOBS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return os.cpu_count() or 1


def cached_parallel_compile(compiler, jobs):
    """A compiler.compile that builds into OBJECT_CACHE, in parallel, skipping up-to-date objects."""

    def compile(sources, output_dir=None, macros=None, include_dirs=None, debug=0,
                extra_preargs=None, extra_postargs=None, depends=None):
        macros, objects, extra_postargs, pp_opts, build = compiler._setup_compile(
            str(OBJECT_CACHE), macros, include_dirs, sources, depends, extra_postargs)
        cc_args = compiler._get_cc_args(pp_opts, debug, extra_preargs)
        search = [Path(d) for d in (include_dirs or []) if Path(d).resolve().is_relative_to(ROOT)]
        # The command, minus include directories (pip's isolated builds put numpy's headers
        # in a new temporary directory each time).
        command = [a for a in [*compiler.compiler_so, *cc_args, *extra_postargs] if not a.startswith("-I")]
        key = hashlib.sha256(repr((command, sorted(map(str, macros)))).encode()).hexdigest()

        def stale(obj, src):
            stamp = Path(obj + ".cmd")
            if not os.path.exists(obj) or not stamp.exists() or stamp.read_text() != key:
                return True
            newest = max([os.path.getmtime(src)] + [os.path.getmtime(p) for p in included_files(src, search)])
            return os.path.getmtime(obj) < newest

        todo = [(obj, build[obj]) for obj in objects if stale(obj, build[obj][0])]
        kept = len(objects) - len(todo)
        print(f"fastloss build: compiling {len(todo)} of {len(objects)} translation units on {jobs} jobs"
              f"{f' ({kept} up to date)' if kept else ''}", file=sys.stderr)

        def one(item):
            obj, (src, ext) = item
            os.makedirs(os.path.dirname(obj), exist_ok=True)
            compiler._compile(obj, src, ext, cc_args, extra_postargs, pp_opts)
            Path(obj + ".cmd").write_text(key)

        with ThreadPoolExecutor(max_workers=jobs) as pool:
            list(pool.map(one, todo))  # list(): re-raises the first compile error
        return objects

    return compile


class BuildExt(build_ext):
    def build_extensions(self):
        unix = self.compiler.compiler_type == "unix"
        flags = BASE_FLAGS if unix else ["/O2"]
        if unix:
            flags = flags + (["-g"] if os.environ.get("FASTLOSS_DEBUG") == "1" else ["-g0"])
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
        self.compiler.compile = cached_parallel_compile(self.compiler, build_jobs())
        super().build_extensions()
        for ext in self.extensions:
            if ext.name == "fastloss.kernels" and os.path.exists(self.get_ext_fullpath(ext.name)):
                self.build_library(ext)

    def build_library(self, ext):
        """libfastloss.so beside the extension (fastloss/lib/): its kernel objects, as they are,
        and the C level. Optional as the extension: a failure leaves the Python package whole."""
        if not sys.platform.startswith("linux"):
            print("fastloss build: libfastloss in the wheel is built on Linux only (CMake elsewhere)",
                  file=sys.stderr)
            return
        kernels = [s for s in ext.sources if s.endswith(".cpp") and not s.endswith("kernels.cpp")]
        try:
            objects = self.compiler.object_filenames(kernels, output_dir=str(OBJECT_CACHE))
            objects += self.compiler.compile(
                [str(GENERATED / "c_level.cpp"), str(CSRC / "library.cpp")],
                macros=ext.define_macros, include_dirs=ext.include_dirs,
                extra_postargs=ext.extra_compile_args)
            out = Path(self.get_ext_fullpath(ext.name)).parent / "lib"
            self._library = out / "libfastloss.so"
            self.compiler.link_shared_object(
                objects, "libfastloss.so", output_dir=str(out), target_lang="c++",
                # -z nodelete: dlclose leaves the library mapped, since the helper threads of
                # its pool (csrc/runtime.cpp) live as long as the process.
                extra_postargs=[*ext.extra_link_args, "-Wl,-soname,libfastloss.so",
                                f"-Wl,--version-script={CSRC / 'libfastloss.map'}", "-Wl,--no-undefined",
                                "-Wl,-z,nodelete"])
            print(f"fastloss build: C library {out / 'libfastloss.so'}", file=sys.stderr)
        except Exception as exc:  # noqa: BLE001 - reported, the Python package stays usable
            print(f"fastloss build: libfastloss NOT built ({exc})", file=sys.stderr)

    # The library is an output of build_ext beside the extension: in the wheel, and copied to
    # the source tree by in-place and editable builds, as the extension is.
    _library = None

    def _library_inplace(self):
        build_py = self.get_finalized_command("build_py")
        return Path(build_py.get_package_dir("fastloss")) / "lib" / "libfastloss.so"

    def get_outputs(self):
        return super().get_outputs() + ([str(self._library)] if self._library else [])

    def get_output_mapping(self):
        mapping = super().get_output_mapping()
        if self.inplace and self._library:
            mapping[str(self._library)] = str(self._library_inplace())
        return mapping

    def copy_extensions_to_source(self):
        super().copy_extensions_to_source()
        if self._library and self._library.exists():
            self.mkpath(str(self._library_inplace().parent))
            self.copy_file(str(self._library), str(self._library_inplace()), level=self.verbose)


def extensions(codegen):
    try:
        import numpy  # noqa: F401
        from Cython.Build import cythonize
    except ImportError:
        print("fastloss build: Cython missing, installing the NumPy backend only", file=sys.stderr)
        return []
    import numpy

    ext = Extension(
        "fastloss.kernels",
        # The Cython glue first: the linker keeps the first copy of an inline function
        # emitted by several units, and the glue is compiled for the baseline only.
        ["fastloss/kernels.pyx", str(CSRC / "runtime.cpp"),
         *(str(CSRC / f"isa_{level}.cpp") for level in ("baseline", "avx2", "avx512"))],
        depends=[str(p) for p in (*CSRC.glob("*"), *GENERATED.glob("*"))],
        include_dirs=[numpy.get_include(), str(CSRC), str(GENERATED), str(INCLUDE)],
        language="c++",
    )
    modules = cythonize(
        [ext],
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    )
    # Cython writes kernels_api.h (the C-API import of the C level) next to the .pyx; the
    # public header fastloss.h includes it from fastloss/include.
    api_header = Path("fastloss/kernels_api.h")
    if api_header.exists():
        codegen.write_if_changed(INCLUDE / "kernels_api.h", api_header.read_text())
    return modules


codegen = run_generator()
setup(ext_modules=extensions(codegen), cmdclass={"build_ext": BuildExt})
