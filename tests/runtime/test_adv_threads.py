"""Adversarial runtime suite: resource limits, threads, fork and signals (SPEC11 item 4).

Every scenario runs in a fresh interpreter under a timeout (a process killed by the OpenMP
runtime, a crash or a hang fails the test, never the suite):

* RLIMIT_AS capped just above the current usage, then parallel calls (n_threads=2 and
  1024, big inputs, every kind of parallel region: elementwise, class, value scans): the
  serial bits and exit 0 (a refused thread means fewer threads, never exit(1)).
* OMP_NUM_THREADS=3000: get_num_threads() <= the CPUs the process may use, calls work.
* The OS threads of the process after a call with n_threads=1024 (and at the C level with
  n_threads=INT_MAX): at most the CPU count + what it was before + 1; with the affinity
  narrowed to one CPU (before import, and after), no helper thread at all.
* fork while another Python thread is inside a parallel kernel, fork after n_threads=1024,
  a fork of a fork; many Python threads at once with different n_threads; signals and
  KeyboardInterrupt during long calls.
"""

from __future__ import annotations

import os

import pytest

import fastloss
from adv_runtime_support import C_LEVEL_PATH, assert_ok, run_python

HAS_AFFINITY = hasattr(os, "sched_getaffinity")
compiled_only = pytest.mark.skipif(fastloss.get_backend() != "cython",
                                   reason="OpenMP threads belong to the compiled kernels")
needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
linux_only = pytest.mark.skipif(not (HAS_AFFINITY and os.path.isdir("/proc/self/task")),
                                reason="needs sched_getaffinity and /proc/self/task (Linux)")

PRELUDE = f"""
import hashlib, os, sys, resource, threading, time, warnings
warnings.simplefilter("ignore")
sys.path[:0] = {C_LEVEL_PATH!r}
import numpy as np
import fastloss as fl

def vm_size():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmSize:"))

def n_os_threads():
    return len(os.listdir("/proc/self/task"))

CPUS = len(os.sched_getaffinity(0))
rng = np.random.default_rng(0)
N = 600_000
x = rng.standard_normal(N).astype(np.float32)
t = rng.standard_normal(N).astype(np.float32)
probs = rng.uniform(0.01, 0.99, N).astype(np.float32)
probs_r = probs[::-1].copy()
signs = np.where(rng.random(N) < 0.5, -1.0, 1.0).astype(np.float32)
logits = rng.standard_normal((N // 10, 10)).astype(np.float32)
labels = rng.integers(0, 10, N // 10)
wide = rng.standard_normal((N // 300, 300)).astype(np.float32)
wide_labels = rng.integers(0, 300, N // 300)

def new_outs():
    return [np.empty_like(a) for a in (x, probs, x, logits, wide, logits)]

def work(n_threads, outs=None):
    # every kind of parallel region: elementwise, value scans (BCE, hinge), class kernels;
    # with outs (allocated beforehand) a call allocates nothing the size of its input
    o = outs or [None] * 6
    res = [fl.mse_loss_grad(x, t, n_threads=n_threads, out=o[0]),
           fl.binary_cross_entropy_grad(probs, probs_r, n_threads=n_threads, out=o[1]),
           fl.hinge_loss_grad(x, signs, n_threads=n_threads, out=o[2]),
           fl.cross_entropy_grad(logits, labels, n_threads=n_threads, out=o[3]),
           fl.nll_loss_grad(wide, wide_labels, n_threads=n_threads, out=o[4]),
           fl.multi_margin_loss_grad(logits, labels, n_threads=n_threads, out=o[5])]
    return [(float(loss), hashlib.sha256(grad).hexdigest()) for loss, grad in res]
"""




# --------------------------------------------------------------------------- RLIMIT_AS

_RLIMIT_THREADS = PRELUDE + """
outs = new_outs()
serial = work(1, outs)
resource.setrlimit(resource.RLIMIT_AS, (vm_size() + {headroom}, resource.getrlimit(resource.RLIMIT_AS)[1]))
for n_threads in {thread_counts}:
    print("CALL n_threads =", n_threads, flush=True)
    assert work(n_threads, outs) == serial, f"n_threads={{n_threads}} under RLIMIT_AS: not the serial bits"
print("RLIMIT-THREADS-OK")
"""


@linux_only
@compiled_only
@pytest.mark.parametrize("headroom_mb,thread_counts", [(4, (2, 1024)), (24, (1024, 2, None))],
                         ids=["4MB-2-then-1024", "24MB-1024-first"])
def test_parallel_calls_under_an_address_space_cap(thread_counts, headroom_mb):
    """RLIMIT_AS just above the current usage (4 MB: not even one more 8 MB thread stack;
    24 MB: a couple), then calls asking for 2 and 1024 threads: each gives the serial bits
    and the process lives (libgomp calls exit(1) when it cannot create a team's thread).
    The gradients go to buffers allocated before the cap: the calls allocate nothing big."""
    code = _RLIMIT_THREADS.format(headroom=headroom_mb << 20, thread_counts=thread_counts)
    assert_ok(run_python(code, env={"OMP_NUM_THREADS": None}), "RLIMIT-THREADS-OK")


# --------------------------------------------------------------------------- thread counts

_OMP_3000 = PRELUDE + """
n = fl.get_num_threads()
assert 1 <= n <= CPUS, f"OMP_NUM_THREADS={{os.environ['OMP_NUM_THREADS']}}: get_num_threads() = {{n}} > {{CPUS}} CPUs"
before = n_os_threads()
serial = work(1)
assert work(None) == serial, "default thread count: not the serial bits"
after = n_os_threads()
assert after <= before + CPUS + 1, f"{{after - before}} new OS threads for {{CPUS}} CPUs"
fl.set_num_threads(5000)
assert fl.get_num_threads() <= CPUS, f"set_num_threads(5000): get_num_threads() = {{fl.get_num_threads()}}"
assert work(None) == serial
print("OMP-OK", n, before, after)
"""


@linux_only
@pytest.mark.parametrize("omp", ["3000", "100000,2"])
def test_omp_num_threads_far_above_the_cpus_is_clamped(omp):
    """OMP_NUM_THREADS=3000 (SPEC11 item 4): get_num_threads() reports at most the CPUs
    the process may use (also after set_num_threads(5000)), calls give the serial bits, and
    the process gets at most one OS thread per CPU. Both backends."""
    assert_ok(run_python(_OMP_3000.format(), env={"OMP_NUM_THREADS": omp}), "OMP-OK")


_THREAD_COUNT = PRELUDE + """
before = n_os_threads()
serial = work(1)
for n_threads in (1024, 2**31 - 1, 64, 3):
    assert work(n_threads) == serial, f"n_threads={{n_threads}}: not the serial bits"
    after = n_os_threads()
    assert after <= before + CPUS + 1, (f"n_threads={{n_threads}}: {{after}} OS threads, {{before}} before, "
                                        f"{{CPUS}} CPUs")
# the C level: n_threads = INT_MAX
from test_c_level import call_c, MEAN
grad = np.empty_like(x)
loss = call_c("mse_loss", x, t, {{}}, MEAN, grad=grad, n_threads=2**31 - 1)
assert float(np.float32(loss)) == serial[0][0], "C level with n_threads=INT_MAX: not the serial loss"
assert hashlib.sha256(grad).hexdigest() == serial[0][1], "C level with n_threads=INT_MAX: not the serial gradient"
grad = np.empty_like(logits)
loss = call_c("cross_entropy", logits, labels, {{}}, MEAN, grad=grad, n_threads=2**31 - 1)
assert float(np.float32(loss)) == serial[3][0] and hashlib.sha256(grad).hexdigest() == serial[3][1], (
    "C level cross_entropy with n_threads=INT_MAX: not the serial bits")
after = n_os_threads()
assert after <= before + CPUS + 1, f"C level n_threads=INT_MAX: {{after}} OS threads, {{before}} before, {{CPUS}} CPUs"
print("THREADS-OK", before, after, CPUS)
"""


@linux_only
@compiled_only
def test_huge_n_threads_starts_at_most_one_thread_per_cpu():
    """After calls with n_threads=1024 and 2**31 - 1 (Python API and C level), the process
    has at most CPU count + (threads before) + 1 OS threads, and the serial bits."""
    assert_ok(run_python(_THREAD_COUNT.format(), env={"OMP_NUM_THREADS": None}), "THREADS-OK")


_ONE_CPU = """
import os
cpu = sorted(os.sched_getaffinity(0))[0]
{narrow_before}
""" + PRELUDE + """
{narrow_after}
assert CPUS == 1
assert fl.get_num_threads() == 1, f"one usable CPU: get_num_threads() = {{fl.get_num_threads()}}"
before = n_os_threads()
serial = work(1)
assert work(1024) == serial and work(None) == serial
after = n_os_threads()
assert after <= before + 1, f"one usable CPU: {{after - before}} new OS threads"
print("ONE-CPU-OK", before, after)
"""


@linux_only
@pytest.mark.parametrize("when", ["before-import", "after-import"])
def test_one_usable_cpu_means_no_helper_threads(when):
    """The affinity mask narrowed to one CPU (as taskset, a container's cpuset or a job
    scheduler does; "after-import": as os.sched_setaffinity in a running program):
    get_num_threads() is 1 and n_threads=1024 starts no helper thread."""
    narrow = "os.sched_setaffinity(0, {cpu})"
    code = _ONE_CPU.format(narrow_before=narrow if when == "before-import" else "",
                           narrow_after=(narrow + "\nCPUS = 1") if when == "after-import" else "")
    assert_ok(run_python(code, env={"OMP_NUM_THREADS": None}), "ONE-CPU-OK")


# --------------------------------------------------------------------------- many Python threads

_MANY_THREADS = PRELUDE + """
serial = work(1)
counts = [1, 2, 3, 7, 1024, None, 2**31 - 1, 5]
errors = []

def job(i):
    try:
        for k in range(2):
            n = counts[(i + k) % len(counts)]
            if work(n) != serial:
                errors.append(f"thread {{i}} n_threads={{n}}: not the serial bits")
    except BaseException as exc:
        errors.append(f"thread {{i}}: {{exc!r}}")

threads = [threading.Thread(target=job, args=(i,)) for i in range(12)]
for th in threads:
    th.start()
for th in threads:
    th.join()
assert not errors, errors[:5]
print("MANY-OK", n_os_threads())
"""


@linux_only
def test_many_python_threads_with_different_thread_counts():
    """12 Python threads at once, each calling every kind of parallel kernel with another
    n_threads (1 ... 2**31 - 1, None): every result the serial bits, no crash."""
    assert_ok(run_python(_MANY_THREADS.format(), env={"OMP_NUM_THREADS": None}), "MANY-OK")


# --------------------------------------------------------------------------- fork

_FORK_DURING_CALL = PRELUDE + """
serial = work(2)
big = rng.standard_normal(2_000_000).astype(np.float32)
big_t = np.zeros_like(big)
stop = threading.Event()

def busy():
    while not stop.is_set():  # parallel kernels, GIL released, while the main thread forks
        fl.mse_loss_grad(big, big_t, n_threads=1024)
        fl.cross_entropy_grad(logits, labels, n_threads=2)

th = threading.Thread(target=busy)
th.start()
time.sleep(0.05)
for attempt in range(3):
    pid = os.fork()
    if pid == 0:
        ok = work(2) == serial and work(1024) == serial and work(None) == serial
        if ok:  # and a fork of the fork
            pid2 = os.fork()
            if pid2 == 0:
                os._exit(0 if work(2) == serial else 3)
            _, status2 = os.waitpid(pid2, 0)
            ok = os.waitstatus_to_exitcode(status2) == 0
        os._exit(0 if ok else 3)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    assert code == 0, f"forked child (attempt {{attempt}}) exited with {{code}}"
    time.sleep(0.01)
stop.set()
th.join()
assert work(1024) == serial  # the parent still computes in parallel
print("FORK-OK")
"""


@needs_fork
@linux_only
def test_fork_while_another_thread_runs_a_parallel_kernel():
    """fork() while another Python thread is inside a parallel kernel (n_threads=1024):
    the child (and the child's child) compute the same bits with any n_threads, no hang."""
    assert_ok(run_python(_FORK_DURING_CALL.format(), timeout=90, env={"OMP_NUM_THREADS": None}), "FORK-OK")


# --------------------------------------------------------------------------- signals

_SIGNALS = PRELUDE + """
import signal
serial = work(2)
ticks = []
busy = []

def on_alarm(*args):
    if busy:  # a slow machine: never nest handlers
        return
    busy.append(1)
    try:
        ticks.append(fl.mse_loss(x[:1000], t[:1000]))
    finally:
        busy.pop()

signal.signal(signal.SIGALRM, on_alarm)
signal.setitimer(signal.ITIMER_REAL, 0.003, 0.003)  # a signal every 3 ms during the calls
try:
    for _ in range(6):
        assert work(2) == serial and work(1024) == serial
finally:
    signal.setitimer(signal.ITIMER_REAL, 0)
assert ticks, "no SIGALRM delivered"
# SIGINT during a long call: KeyboardInterrupt when the call returns, then calls go on
threading.Timer(0.05, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
interrupted = False
try:
    for _ in range(2000):
        fl.mse_loss_grad(x, t, n_threads=2)
        fl.cross_entropy_grad(logits, labels, n_threads=2)
except KeyboardInterrupt:
    interrupted = True
assert interrupted, "no KeyboardInterrupt"
assert work(2) == serial
print("SIGNALS-OK", len(ticks))
"""


@linux_only
def test_signals_and_keyboard_interrupt_during_calls():
    """A SIGALRM every 3 ms (its handler calls fastloss) during parallel calls, then SIGINT
    during a run of long calls: the serial bits, KeyboardInterrupt raised, calls go on."""
    assert_ok(run_python(_SIGNALS.format(), env={"OMP_NUM_THREADS": None}), "SIGNALS-OK")


# --------------------------------------------------------------------------- work claiming

_HELD_HELPERS = PRELUDE + """
from fastloss import kernels
serial = work(1)
assert work(2) == serial  # the pool's helpers exist now (where the OS allows them)
kernels._hold_helpers(True)
try:
    before = kernels._helper_units()
    for n_threads in (2, 1024, None):
        # a helper that never runs must not hold a call up: were the caller waiting for it,
        # this would hang until the timeout
        assert work(n_threads) == serial, f"n_threads={{n_threads}}, helpers held: not the serial bits"
    assert kernels._helper_units() == before, "a held helper ran a unit"
finally:
    kernels._hold_helpers(False)
# released, the helpers take part again (within a minute even on a busy machine; one usable
# CPU has no helper to wait for)
deadline = time.monotonic() + 60
big = rng.standard_normal(4_000_000).astype(np.float32)
grad = np.empty_like(big)
while CPUS > 1 and kernels._helper_units() == before and time.monotonic() < deadline:
    fl.mse_loss_grad(big, big[::-1].copy(), n_threads=2, out=grad)
joined = kernels._helper_units() - before
assert joined > 0 or CPUS == 1, "helpers released, yet none ran a unit in 60 s"
assert work(2) == serial
print("HELD-OK", joined)
"""


@linux_only
@compiled_only
def test_calls_complete_without_helpers_that_never_run():
    """Issue 16, point 1: the calling thread claims work like any helper and waits only for
    units a helper has claimed. With every helper of the pool held (as threads the OS does
    not schedule on a busy machine), parallel calls of every kind still complete, on the
    calling thread alone, with the serial bits; released, the helpers run units again."""
    assert_ok(run_python(_HELD_HELPERS.format(), timeout=120, env={"OMP_NUM_THREADS": None}), "HELD-OK")
