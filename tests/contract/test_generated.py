"""One table makes everything: what is generated from the registry is current, complete and
used. (The generator: fastloss/_codegen.py; the registry: fastloss/_registry.py.)

* every generated file of the source tree, and the generated tables of docs/API.md, are what
  the registry gives now (a stale one fails here and in CI, not silently);
* the compiled module was built from this registry (its kernel table is the registry's);
* a backend without a kernel for a registry loss cannot be imported (ImportError naming it);
* the type stubs make a type checker refuse a misspelt keyword (``label_smothing=``).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import fastloss
from fastloss import _registry

REPO = Path(__file__).resolve().parents[2]


def _codegen():
    spec = importlib.util.spec_from_file_location("_fastloss_codegen_test", REPO / "fastloss" / "_codegen.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_files_are_current():
    stale = _codegen().generate(check=True)
    assert not stale, (f"generated files differ from what fastloss/_registry.py gives: {stale}; "
                       "run `python fastloss/_codegen.py` (the build does) and commit docs/API.md")


def test_every_generated_file_is_marked_and_untracked_or_delimited():
    codegen = _codegen()
    for path, text in codegen.outputs(codegen.load_registry()).items():
        if path.name == "API.md" and path.parent.name == "docs":
            assert "BEGIN GENERATED: losses" in text and "BEGIN GENERATED: c-functions" in text
        elif path.name == "README.md":
            assert "BEGIN GENERATED: readme-losses" in text
        else:
            assert codegen.BANNER in text.splitlines()[0] or codegen.BANNER in text.splitlines()[1], path


def test_compiled_kernel_table_is_the_registry():
    try:
        from fastloss import kernels
    except ImportError:
        pytest.skip("the compiled backend is not built here")  # numpy-only installs
    table = kernels.kernel_table()
    assert [row["name"] for row in table] == list(_registry.KERNEL_NAMES)
    divisors = {"count": 0, "weight_sum": 1, "target_weight": 2}
    for row, k in zip(table, _registry.KERNELS):
        assert row["divisor"] == divisors[k.mean_divisor], k.name
        assert row["kind"] == (0 if k.loss.kind == "elementwise" else 1), k.name
        assert row["n_params"] == len(k.params), k.name
        assert row["input_unit"] == (k.loss.input_domain == "unit"), k.name
        assert row["target_unit"] == (k.loss.target_domain == "unit"), k.name
        assert row["target_nonneg"] == (k.loss.target_domain == "nonnegative"), k.name
        assert row["target_pos"] == (k.loss.target_domain == "positive"), k.name
        assert row["operand"] == (k.loss.operand is not None), k.name
        assert row["target_sign"] == (k.loss.target_domain == "sign"), k.name
        assert row["ignore_index"] == k.ignore_index, k.name
        assert row["probabilities"] == k.probabilities, k.name


def test_backend_missing_a_kernel_is_an_import_error_naming_it():
    from fastloss import _api, _numpy_kernels

    class Partial:
        NAME = "partial"
        KERNELS = {k: v for k, v in _numpy_kernels.KERNELS.items() if k != "huber_loss"}

    with pytest.raises(ImportError, match="huber_loss"):
        _api.make_public_api(Partial)

    class Extra:
        NAME = "extra"
        KERNELS = {**_numpy_kernels.KERNELS, "not_a_registry_loss": None}

    with pytest.raises(ImportError, match="not_a_registry_loss"):
        _api.make_public_api(Extra)


def test_every_backend_has_exactly_the_registry_kernels():
    from fastloss import _numpy_kernels

    assert sorted(_numpy_kernels.KERNELS) == sorted(_registry.KERNEL_NAMES)
    assert fastloss.numpy_backend.PUBLIC_FUNCTIONS == tuple(
        name for loss in _registry.LOSSES for name in loss.functions)


def test_stubs_and_py_typed_are_installed():
    package = Path(fastloss.__file__).parent
    assert (package / "py.typed").is_file()
    stub = (package / "__init__.pyi").read_text()
    for loss in _registry.LOSSES:
        for name in loss.functions:
            assert f"def {name}(" in stub, name
    assert (package / "API.md").read_text().count("BEGIN GENERATED") == 2


def test_type_checker_refuses_a_misspelt_keyword(tmp_path):
    good = tmp_path / "good.py"
    good.write_text(textwrap.dedent("""
        import numpy as np
        import fastloss as fl
        x = np.zeros((4, 3), np.float32)
        y = np.zeros(4, np.int64)
        loss = fl.cross_entropy(x, y, label_smoothing=0.1)
        value: float = float(loss)
        l2, g = fl.mse_loss_grad(x, x, reduction="none")
        n: int = fl.get_num_threads()
    """))
    bad = tmp_path / "bad.py"
    bad.write_text(textwrap.dedent("""
        import numpy as np
        import fastloss as fl
        fl.cross_entropy(np.zeros((4, 3)), np.zeros(4, np.int64), label_smothing=0.1)
        fl.huber_loss(np.zeros(3), np.zeros(3), reduction="avg")
    """))
    env = {**os.environ, "MYPY_CACHE_DIR": str(tmp_path / ".mypy_cache")}
    # mypy does not run import hooks: an editable install (a finder, PEP 660) is found through
    # MYPYPATH; a regular one in site-packages (which mypy refuses in MYPYPATH) directly.
    parent = Path(fastloss.__file__).resolve().parent.parent
    if parent.name not in ("site-packages", "dist-packages"):
        env["MYPYPATH"] = str(parent)
    run = lambda f: subprocess.run([sys.executable, "-m", "mypy", "--no-error-summary", "--strict-optional",  # noqa: E731
                                    str(f)], capture_output=True, text=True, env=env, cwd=tmp_path)
    ok = run(good)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    refused = run(bad)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert 'Unexpected keyword argument "label_smothing"' in refused.stdout
    assert 'No overload variant of "huber_loss"' in refused.stdout  # reduction="avg"
