"""Where fastloss.torch's per-call time goes on a small loss (issue 14: "the adapter's
per-call overhead at 1e3 elements no more than PyTorch's own").

    python bench/torch_overhead.py              # mse_loss, 1e3 float32, 25 rounds of 400 calls
    python bench/torch_overhead.py --quick      # 5 rounds of 100 calls

Forward + ``.backward()`` (``x.grad = None`` before each) of, from the most to the least work:

* ``F``: ``torch.nn.functional.mse_loss``;
* ``flt``: ``fastloss.torch.mse_loss`` (the generated function, ``_forward``'s checks, the
  eager autograd.Function);
* ``Function``: that autograd.Function called directly (no checks: what ``_forward`` costs
  is ``flt - Function``);
* ``kernel``: a bare autograd.Function calling ``fastloss.mse_loss_grad`` on ``.numpy()``
  views and returning its gradient;
* ``floor``: an autograd.Function that computes nothing (a zero loss, a zero gradient): the
  cost of PyTorch's custom-function machinery alone.

Measured in thread CPU time (``time.thread_time_ns``: time other processes take from this
one is not counted, which makes it usable on a busy machine; cache and core sharing still
show), the implementations in turn, median of the rounds; printed relative to ``F``.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time

import numpy as np


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 rounds of 100 calls")
    parser.add_argument("-n", type=int, default=1000, help="elements (default 1000)")
    args = parser.parse_args(argv)
    import torch
    import torch.nn.functional as F

    import fastloss
    import fastloss.torch as flt

    torch.set_num_threads(1)
    fastloss.set_num_threads(1)
    n = args.n
    x = torch.randn(n, requires_grad=True)
    t = torch.randn(n)
    plan = flt.mse_loss.__globals__["_plan"]  # (the adapter's per-loss plan: its eager Function)
    kernel = fastloss.mse_loss_grad

    class Kernel(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, t):
            loss, grad = kernel(x.detach().numpy(), t.numpy(), reduction="mean")
            ctx.save_for_backward(torch.from_numpy(grad))
            return torch.from_numpy(np.array(loss))

        @staticmethod
        def backward(ctx, g):
            return ctx.saved_tensors[0], None

    class Floor(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, t):
            ctx.save_for_backward(torch.from_numpy(np.zeros(n, np.float32)))
            return torch.from_numpy(np.array(np.float32(0)))

        @staticmethod
        def backward(ctx, g):
            return ctx.saved_tensors[0], None

    def step(fn):
        def call():
            x.grad = None
            fn(x, t).backward()
        return call

    calls = {"F": step(F.mse_loss), "flt": step(flt.mse_loss),
             "Function": step(lambda a, b: plan.apply(a, b, {}, "mean")),
             "kernel": step(Kernel.apply), "floor": step(Floor.apply)}
    rounds, per = (5, 100) if args.quick else (25, 400)
    times = {k: [] for k in calls}
    for fn in calls.values():
        for _ in range(per):
            fn()
    load = os.getloadavg()
    gc.disable()
    try:
        for _ in range(rounds):
            for key, fn in calls.items():
                t0 = time.thread_time_ns()
                for _ in range(per):
                    fn()
                times[key].append((time.thread_time_ns() - t0) / per / 1e3)
    finally:
        gc.enable()
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"# mse_loss, n={n}, float32, forward + backward; thread CPU time, median of {rounds} x {per} calls; "
          f"loadavg {' '.join(f'{v:.2f}' for v in load)} -> {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print("| call | us | / F |")
    print("|---|---:|---:|")
    for key, v in med.items():
        print(f"| {key} | {v:.1f} | {v / med['F']:.2f} |")
    return med


if __name__ == "__main__":
    main()
