"""The package's layers import one way (README, "Layout"):

    _registry  <-  _codegen (build time, by path)
    _registry  <-  backends (_numpy_kernels; kernels.pyx + _cython_backend)
    backends, _registry  <-  _api (the front layer)  <-  public surface (__init__, numpy_backend)
    public surface  <-  bench (the benchmark subpackage), __main__ (the command line)
    public surface  <-  _boosting  <-  xgboost, lightgbm, catboost (the gradient-boosting adapters)
    _registry  <-  _adapters (registry facts shared by the framework adapters)
    public surface, _registry, _adapters  <-  torch (the PyTorch adapter; the only module importing torch)
    public surface, _registry, _adapters  <-  jax (the JAX adapter; the only module importing jax)

No backend imports the front layer or the public surface back, and nothing but the command
line imports the benchmark. A module missing from LAYERS below fails this test: a new
module must be given its place."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "fastloss"

# module -> the fastloss modules it may import
LAYERS = {
    "_registry": set(),
    "_codegen": set(),
    "_numpy_kernels": set(),
    "kernels": {"_registry"},
    "_cython_backend": {"kernels"},
    "_api": {"_registry", "kernels"},
    "numpy_backend": {"_numpy_kernels", "_api"},
    "__init__": {"_api", "_registry", "_cython_backend", "_numpy_kernels"},
    "__main__": {"_registry", "bench", "fastloss"},  # fastloss: `config` reads get_library()
    # The boosting adapters: the public functions (XGBoost and LightGBM themselves are
    # imported inside the factories, so importing the adapters needs neither), and, on the
    # compiled backend, the kernels' fast method for the gradient and Hessian without the
    # loss (its registry entry names the kernel and the default parameters).
    "_boosting": {"fastloss", "kernels", "_registry"},
    "xgboost": {"_boosting"},
    "lightgbm": {"_boosting"},
    "catboost": {"_boosting"},
    # What the framework adapters derive alike from the registry (signatures, target
    # gradients, array parameters); imports neither framework.
    "_adapters": {"_registry"},
    # The PyTorch adapter: the public functions (NAME, NAME_grad) and the registry (one
    # operator per row). PyTorch itself is imported there only, never by `import fastloss`.
    "torch": {"fastloss", "_registry", "_adapters"},
    # The JAX adapter: the same (one custom_vjp per row and static signature). JAX itself is
    # imported there only, never by `import fastloss`.
    "jax": {"fastloss", "_registry", "_adapters"},
}
BENCH_MAY_IMPORT = {"fastloss", "numpy_backend", "_registry", "kernels", "bench"}

_RELATIVE = re.compile(r"^\s*from\s+(\.+)([\w.]*)\s+import\s+([\w, ()]+)", re.M)
_ABSOLUTE = re.compile(r"^\s*(?:from|import)\s+fastloss((?:\.\w+)*)", re.M)


def imports_of(path: Path) -> set[str]:
    """The fastloss modules ``path`` imports (first component below the package)."""
    text = path.read_text()
    found = set()
    for dots, module, names in _RELATIVE.findall(text):
        if module:
            found.add(module.split(".")[0])
        else:
            found.update(n.split()[0] for n in names.replace("(", " ").replace(")", " ").split(",") if n.split())
    for module in _ABSOLUTE.findall(text):
        found.add(module.lstrip(".").split(".")[0] or "fastloss")
    return found


def core_modules():
    return {p.stem: p for p in [*PACKAGE.glob("*.py"), PACKAGE / "kernels.pyx"]}


def test_every_module_has_a_layer():
    assert sorted(core_modules()) == sorted(LAYERS)


def test_imports_point_one_way():
    for name, path in core_modules().items():
        extra = imports_of(path) - LAYERS[name]
        assert not extra, f"fastloss/{path.name} imports {sorted(extra)}, outside its layer"


def test_bench_imports_only_the_public_surface():
    bench = PACKAGE / "bench"
    assert bench.is_dir()
    for path in bench.glob("*.py"):
        imported = set()
        text = path.read_text()
        for dots, module, names in _RELATIVE.findall(text):
            if len(dots) == 1:
                continue  # within the bench package
            imported.add(module.split(".")[0] if module else "fastloss")
        imported |= {m.lstrip(".").split(".")[0] or "fastloss" for m in _ABSOLUTE.findall(text)}
        assert imported <= BENCH_MAY_IMPORT, f"fastloss/bench/{path.name} imports {sorted(imported - BENCH_MAY_IMPORT)}"


def test_importing_fastloss_loads_no_bench_and_no_generator():
    """The benchmark and the build-time generator are not part of an import of fastloss."""
    import subprocess
    import sys

    code = ("import sys, fastloss, fastloss.numpy_backend; "
            "print(sorted(m for m in sys.modules if m.startswith('fastloss.bench') or 'codegen' in m))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
