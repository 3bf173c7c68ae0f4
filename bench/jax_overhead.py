"""Per-call cost of fastloss.jax (a jax.pure_callback) against a jitted jax.numpy loss.

    PYTHONPATH=. python bench/jax_overhead.py [--repeat 200] [--threads N] [--callback pure]

Times ``jax.jit(jax.value_and_grad(loss))`` per call (median of ``--repeat`` calls, each
blocked until its result is ready), float32, at 10 (the fixed cost alone), 1e3 and 1e6
elements: fastloss.jax.cross_entropy on (N, 10) logits with int32 labels against the
hand-written ``-mean(take_along_axis(log_softmax(x), y))``, and fastloss.jax.mse_loss
against ``mean((x - y)**2)``. The figures quoted in fastloss/jax.py's docstring come from this script.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import fastloss
import fastloss.jax as flj


def cross_entropy(x, y):
    """Mean softmax cross-entropy: -log_softmax(x)[i, y_i], averaged over the rows."""
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(x, axis=1), y[:, None], axis=1))


def mse_loss(x, y):
    """Mean squared error: mean((x - y)**2)."""
    return jnp.mean((x - y) ** 2)


def inputs(name, n, rng):
    """cross_entropy: (n / 10, 10) float32 logits and int32 labels; mse_loss: n float32 pairs."""
    if name == "cross_entropy":
        return (jnp.asarray(rng.normal(size=(n // 10, 10)).astype(np.float32)),
                jnp.asarray(rng.integers(0, 10, n // 10).astype(np.int32)))
    return jnp.asarray(rng.normal(size=n).astype(np.float32)), jnp.asarray(rng.normal(size=n).astype(np.float32))


def per_call(fn, x, y, repeat):
    jax.block_until_ready(fn(x, y))  # compile
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        jax.block_until_ready(fn(x, y))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--threads", type=int, default=None, help="fastloss.set_num_threads (default: OpenMP's)")
    parser.add_argument("--callback", choices=("default", "pure"), default="default",
                        help="pure: fastloss.jax's jax.pure_callback path (older JAX) instead of buffer_callback")
    args = parser.parse_args()
    fastloss.set_num_threads(args.threads)
    if args.callback == "pure":
        flj._BUFFER_CALLBACK = None
    callback = "buffer_callback" if flj._BUFFER_CALLBACK is not None else "pure_callback"
    print(f"jax {jax.__version__}, fastloss {fastloss.__version__} ({fastloss.get_backend()}, "
          f"{fastloss.get_num_threads()} threads, {callback}); jit(value_and_grad(loss)) per call, float32, "
          f"median of {args.repeat}")
    print(f"{'loss':<14} {'elements':>9} {'fastloss.jax':>13} {'jax.numpy':>11} {'ratio':>6}")
    rng = np.random.default_rng(0)
    for name, ref in (("cross_entropy", cross_entropy), ("mse_loss", mse_loss)):
        for n in (10, 1_000, 1_000_000):
            x, y = inputs(name, n, rng)
            ours = per_call(jax.jit(jax.value_and_grad(getattr(flj, name))), x, y, args.repeat)
            theirs = per_call(jax.jit(jax.value_and_grad(ref)), x, y, args.repeat)
            print(f"{name:<14} {n:>9.0e} {ours * 1e6:>10.1f} us {theirs * 1e6:>8.1f} us {ours / theirs:>6.2f}")


if __name__ == "__main__":
    main()
