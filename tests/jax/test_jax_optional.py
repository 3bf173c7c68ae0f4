"""JAX is optional: ``import fastloss`` (and ``import fastloss.torch``) never imports it, and
without it ``import fastloss.jax`` is an ImportError saying how to install it. Runs with and
without jax installed (it hides jax in a subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)


def test_import_fastloss_does_not_import_jax():
    out = run("import sys, fastloss, fastloss.numpy_backend, fastloss._adapters\n"
              "try:\n"
              "    import fastloss.torch\n"
              "except ImportError:\n"
              "    pass\n"
              "print('jax' in sys.modules, 'jaxlib' in sys.modules)")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False False"


def test_without_jax_the_adapter_names_the_install_command():
    code = ("import sys; sys.modules['jax'] = None\n"
            "import fastloss\n"
            "print(fastloss.mse_loss([1.0], [0.0]))\n"
            "try:\n"
            "    import fastloss.jax\n"
            "except ImportError as e:\n"
            "    print('ImportError:', e)\n")
    out = run(code)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "1.0"
    assert lines[1].startswith("ImportError:") and "pip install jax" in lines[1]
