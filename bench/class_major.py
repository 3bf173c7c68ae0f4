"""Class losses on (N, C, d) input against the same samples as (N d, C) rows.

    python bench/class_major.py            # cross_entropy_grad_hess, K = 5 and 10, 1e5 and 1e6 samples

The class kernels compute 16 samples at a time across SIMD lanes: 16 consecutive (N, C)
rows, or 16 consecutive positions of one sample of an (N, C, d) input (LightGBM's
class-major scores seen as (1, K, n); PyTorch's (N, C, H, W) logits). Both give the same
bits (tests/numerics/test_class_major.py); this shows they take the same time. Medians of
interleaved samples (``fastloss.bench.core.time_interleaved``), 1 thread and all usable
threads, float32 and float64, into reused ``out`` buffers; the ratio is class-major time /
rows time (1.00: the same speed).
"""

from __future__ import annotations

import numpy as np

import fastloss
from fastloss.bench import core


def main():
    rng = np.random.default_rng(0)
    profile = core.Profile(sample_s=2e-3, min_samples=5, max_samples=21, budget_s=0.3)
    print("| K | n | dtype | threads | (n, K) rows | (1, K, n) class-major | class-major / rows |")
    print("|---|---|---|---|---|---|---|")
    for k in (5, 10):
        for n in (10**5, 10**6):
            for dtype in (np.float32, np.float64):
                x = rng.standard_normal((n, k)).astype(dtype)
                y = rng.integers(0, k, n)
                xc, yc = np.ascontiguousarray(x.T).reshape(1, k, n), y.reshape(1, n)
                bufs = [np.empty_like(x), np.empty_like(x)]
                cbufs = [np.empty_like(xc), np.empty_like(xc)]
                for thr in sorted({1, core.usable_cores()}):
                    calls = {
                        "rows": lambda: fastloss.cross_entropy_grad_hess(x, y, reduction="sum", n_threads=thr,
                                                                         out=tuple(bufs)),
                        "class-major": lambda: fastloss.cross_entropy_grad_hess(xc, yc, reduction="sum",
                                                                                n_threads=thr, out=tuple(cbufs)),
                    }
                    t = {key: v["median_s"] for key, v in core.time_interleaved(calls, profile).items()}
                    print(f"| {k} | {n:.0e} | {np.dtype(dtype).name} | {thr} | {t['rows'] * 1e3:.3g} ms "
                          f"| {t['class-major'] * 1e3:.3g} ms | {t['class-major'] / t['rows']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
