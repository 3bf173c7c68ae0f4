"""Helpers of the runtime half of the adversarial suite (the test_adv_*.py of tests/runtime/
and tests/c_level/): probes that may crash or hang run in a fresh interpreter, and the test
asserts how it ended."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# What a probe puts on sys.path (``sys.path[:0] = C_LEVEL_PATH``) to import the C-call helpers
# of c_level/test_c_level.py, which import the support modules in turn.
_TESTS = Path(__file__).resolve().parent.parent
C_LEVEL_PATH = [str(_TESTS / "c_level"), str(_TESTS / "support")]


def run_python(code: str, timeout: float = 60, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter with this one's environment (same fastloss, same
    FASTLOSS_BACKEND), updated by ``env`` (a value of None removes the variable). On a timeout
    the whole process group is killed and the test fails with what the child printed so far."""
    full_env = {**os.environ, **(env or {})}
    for key in [k for k, v in (env or {}).items() if v is None]:
        full_env.pop(key)
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=str(cwd or "/"), env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"did not finish within {timeout} s; output so far:\n{out[-2000:]}\n{err[-2000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def assert_ok(result: subprocess.CompletedProcess, token: str) -> None:
    """The child exited 0 and printed ``token`` (its last check passed)."""
    rc = result.returncode
    how = f"killed by signal {-rc} ({signal.Signals(-rc).name})" if rc < 0 else f"exit code {rc}"
    assert rc == 0 and token in result.stdout, (
        f"{how}\nstdout (last lines):\n{result.stdout[-2500:]}\nstderr:\n{result.stderr[-3000:]}")
