"""fastloss.jax, the JAX adapter (docs/API.md, "JAX adapter"; README, "JAX").

Every loss of the registry, every parameter combination and reduction of its test records
(tests/support/losses.py, cases.py), float32 (JAX's default configuration) and float64
(``jax_enable_x64``, switched on in a context for the test only), under ``jax.jit`` and
eagerly, in values and gradients (the VJP with a random cotangent) against optax or a
jax.numpy reference (tests/support/jax_references.py) computed in float64 on the same
values, and bit for bit against fastloss's own fused result; half precision, vmap, target
gradients, the errors (at trace time where they can be, at run time otherwise), second
derivatives, and a training loop. The value tests run both callback primitives of the
adapter (buffer_callback and pure_callback). JAX is an optional extra (the ``test`` extra
installs it, with optax): without it this module is skipped. tests/jax: 2,699 tests, about
10 minutes on the busy 2-core development machine (JAX traces and compiles every case).
"""

from __future__ import annotations

import contextlib
import inspect

import numpy as np
import pytest

jax = pytest.importorskip("jax")  # (an optional extra: tests/jax/test_jax_optional.py runs without it)

import jax.numpy as jnp  # noqa: E402

import fastloss  # noqa: E402
import fastloss.jax as flj  # noqa: E402
from cases import DTYPES, error_base, error_cases, one_case_per_param_set, representative_cases  # noqa: E402
from fastloss._registry import BY_NAME, LOSSES  # noqa: E402
from helpers import assert_bitwise, assert_grad_close, assert_value_close, loss_shape, rtol_for  # noqa: E402
from jax_references import OPTAX, REFERENCES  # noqa: E402

NAMES = [spec.name for spec in LOSSES]
ARRAY_PARAMS = ("weight", "pos_weight", "quantile")


# The two callback primitives of the adapter: jax.experimental.buffer_callback (the default
# where JAX has it) and jax.pure_callback (older JAX); the value tests run both.
CALLBACKS = (["buffer_callback"] if flj._buffer_callback is not None else []) + ["pure_callback"]


@pytest.fixture(params=CALLBACKS)
def callback(request, monkeypatch):
    if request.param == "pure_callback":
        monkeypatch.setattr(flj, "_BUFFER_CALLBACK", None)
    flj._operator.cache_clear()  # (operators are built for one primitive)
    yield request.param
    flj._operator.cache_clear()


def x64(enabled: bool = True):
    """float64 for the duration of a with-block only (never leaks into other tests)."""
    if not enabled:
        return contextlib.nullcontext()
    if hasattr(jax, "enable_x64"):
        return jax.enable_x64(True)
    from jax.experimental import enable_x64  # (older JAX)
    return enable_x64()


def call(name, x, t, kw, reduction):
    return getattr(flj, name)(x, t, reduction=reduction, **kw)


def to_jax(a, dtype=None):
    a = np.asarray(a)
    if dtype is not None and a.dtype.kind == "f":
        a = a.astype(dtype)
    return jnp.asarray(a)


def jax_args(x, t, kw, dtype=None):
    """The case's arrays as JAX arrays (array parameters too), scalar parameters unchanged."""
    return (to_jax(x, dtype), to_jax(t, dtype),
            {k: to_jax(v, dtype) if isinstance(v, np.ndarray) else v for k, v in kw.items()})


def cotangent_for(case, reduction, dtype):
    if reduction != "none":
        return np.array(0.75, dtype)
    rng = np.random.default_rng(1)
    return rng.uniform(0.5, 1.5, loss_shape(case.spec, case.shape)).astype(dtype)


def reference(name, x, t, kw, reduction, ct):
    """optax / jax.numpy's loss and input VJP, in float64 on the same values."""
    with x64():
        x64_, t64, kw64 = jax_args(np.asarray(x, np.float64), np.asarray(t), kw, np.float64)
        t64 = t64.astype(jnp.float64) if t64.dtype.kind == "f" else t64
        loss, vjp = jax.vjp(lambda a: REFERENCES[name](a, t64, reduction, **kw64), x64_)
        (grad,) = vjp(jnp.asarray(ct, jnp.float64))
        return np.asarray(loss), np.asarray(grad)


def adapter_vjp(name, x, t, kw, reduction, ct, jit):
    """fastloss.jax's loss and input VJP for the cotangent ct, under jax.jit or eagerly."""
    def run(a, c):
        loss, vjp = jax.vjp(lambda b: call(name, b, t, kw, reduction), a)
        return loss, vjp(c)[0]

    loss, grad = (jax.jit(run) if jit else run)(x, ct)
    return np.asarray(loss), np.asarray(grad)


# --------------------------------------------------------------------------- the functions

RICH = [(case, r) for case in one_case_per_param_set() for r in case.spec.reductions]


def test_every_registry_loss_has_an_adapter_and_is_tested():
    """A new registry row gets its function at import, and must get its JAX reference and
    be covered by the value tests below (through its record in tests/support/losses.py)."""
    assert flj.__all__ == NAMES
    for name in NAMES:
        fn = getattr(flj, name)
        assert callable(fn) and fn.__name__ == name
    assert set(REFERENCES) == set(NAMES), f"tests/support/jax_references.py lacks {set(NAMES) - set(REFERENCES)}"
    assert OPTAX <= set(NAMES)
    assert {(case.loss, r) for case, r in RICH} == {(s.name, r) for s in LOSSES for r in s.reductions}
    assert {case.loss for case in HALF_CASES} == set(NAMES)
    assert {case.loss for case in TARGET_CASES} == {s.name for s in LOSSES if s.kind == "elementwise"}


@pytest.mark.parametrize("name", NAMES)
def test_signature_is_the_numpy_api_without_n_threads(name):
    sig = inspect.signature(getattr(flj, name))
    expected = [p for p in inspect.signature(getattr(fastloss, name)).parameters.values() if p.name != "n_threads"]
    assert [(p.name, p.kind, p.default) for p in sig.parameters.values()] == \
           [(p.name, p.kind, p.default) for p in expected]
    with pytest.raises(TypeError):  # parameters are keyword-only, as fastloss's
        getattr(flj, name)(jnp.ones(3), jnp.ones(3), None)


# --------------------------------------------------------------------------- values and gradients


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case,reduction", RICH, ids=lambda v: str(v))
def test_matches_reference(case, reduction, dtype, callback):
    """Under jax.jit and eagerly (jax.vjp op by op): the loss and the input's VJP agree with
    optax / jax.numpy in float64 (rtol 1e-5 float32, 1e-10 float64), and are fastloss's own
    NAME_grad bit for bit (the loss; the gradient times the cotangent); a call outside any
    transformation (fastloss directly) gives the same loss bits."""
    x, t, kw = case.generate(dtype)
    ct = cotangent_for(case, reduction, dtype)
    with x64(dtype == np.float64):
        xj, tj, kwj = jax_args(x, t, kw)
        results = [adapter_vjp(case.loss, xj, tj, kwj, reduction, jnp.asarray(ct), jit) for jit in (True, False)]
        plain = np.asarray(call(case.loss, xj, tj, kwj, reduction))
    ref_loss, ref_grad = reference(case.loss, x, t, kw, reduction, ct)
    loss, grad = getattr(fastloss, case.loss + "_grad")(x, t, reduction=reduction, **kw)
    if reduction == "none" and case.spec.kind == "classes" and grad.ndim > 1:
        ct = np.expand_dims(ct, 1)
    expected_grad = np.asarray(grad * ct, dtype)
    for got_loss, got_grad in results:
        assert got_loss.dtype == dtype and got_loss.shape == np.shape(ref_loss)
        assert got_grad.dtype == dtype and got_grad.shape == np.shape(x)
        assert_value_close(got_loss, ref_loss, rtol_for(dtype))
        assert_grad_close(got_grad, ref_grad, rtol_for(dtype))
        assert_bitwise(got_loss, np.asarray(loss), "loss")
        assert_bitwise(got_grad, expected_grad, "grad")
    assert_bitwise(plain, np.asarray(loss), "loss outside transformations")


# --------------------------------------------------------------------------- half precision

HALF_CASES = representative_cases()


@pytest.mark.parametrize("half", ["float16", "bfloat16"])
@pytest.mark.parametrize("case", HALF_CASES, ids=str)
def test_half_precision_computes_in_float32(case, half, callback):
    """float16 / bfloat16 input: the loss is float32, fastloss's on the (exactly) upcast
    values bit for bit; the gradient has the input's dtype, the float32 gradient times the
    cotangent rounded once."""
    hdtype = jnp.dtype(half)
    x, t, kw = case.generate(np.float32)
    xh = jnp.asarray(x).astype(hdtype)
    x32 = np.asarray(xh.astype(jnp.float32))  # the values the half input holds
    xj, tj, kwj = jax_args(x32, t, kw)
    ct = jnp.float32(0.75)
    for jit in (True, False):
        loss, grad = adapter_vjp(case.loss, xh, tj, kwj, "mean", ct, jit)
        assert loss.dtype == np.float32 and grad.dtype == hdtype
        ref_loss, ref_grad = getattr(fastloss, case.loss + "_grad")(x32, t, **kw)
        assert_bitwise(loss, np.asarray(ref_loss), "loss")
        assert_bitwise(grad, np.asarray(jnp.asarray(ref_grad * np.float32(0.75)).astype(hdtype)), "grad")
    # and fastloss's own half-precision path (NumPy float16 / ml_dtypes bfloat16) agrees
    loss_np, grad_np = getattr(fastloss, case.loss + "_grad")(np.asarray(xh), t, **kw)
    plain, g1 = adapter_vjp(case.loss, xh, tj, kwj, "mean", jnp.float32(1.0), False)
    assert_bitwise(plain, np.asarray(loss_np), "loss")
    assert_bitwise(g1, grad_np, "grad")


def test_mixed_dtypes_promote():
    """An elementwise loss computes in the promoted dtype of input and float target (half
    precision: at least float32); each cotangent comes back in its argument's dtype."""
    rng = np.random.default_rng(0)
    with x64():
        for xd, td in ((jnp.float32, jnp.float64), (jnp.bfloat16, jnp.float32), (jnp.float16, jnp.float64)):
            x = jnp.asarray(rng.normal(size=(5, 4))).astype(xd)
            t = jnp.asarray(rng.normal(size=(5, 4))).astype(td)
            loss, (gx, gt) = jax.value_and_grad(flj.mse_loss, argnums=(0, 1))(x, t)
            expected = jnp.promote_types(jnp.promote_types(xd, td), jnp.float32)
            assert loss.dtype == expected and gx.dtype == xd and gt.dtype == td
            ref = REFERENCES["mse_loss"](x.astype(jnp.float64), t.astype(jnp.float64), "mean")
            rtol = 1e-5 if expected == jnp.float32 else 1e-12
            np.testing.assert_allclose(np.asarray(loss, np.float64), np.asarray(ref), rtol=rtol)


# --------------------------------------------------------------------------- vmap


@pytest.mark.parametrize("case", representative_cases(), ids=str)
def test_vmap_equals_a_loop(case, callback):
    """jax.vmap over a batch of three inputs (loss and gradient, under jit): each row is the
    unbatched call's result, bit for bit."""
    xs, ts = [], []
    for seed in range(3):
        x, t, kw = case.generate(np.float32, seed=seed)
        xs.append(x)
        ts.append(t)
    _, _, kwj = jax_args(xs[0], ts[0], kw)
    X, T = jnp.asarray(np.stack(xs)), jnp.asarray(np.stack(ts))
    for reduction in case.spec.reductions:
        def f(a, b, reduction=reduction):
            return call(case.loss, a, b, kwj, reduction)

        def value_and_grad(a, b, f=f):
            loss, vjp = jax.vjp(lambda c: f(c, b), a)
            return loss, vjp(jnp.ones_like(loss))[0]

        batched = jax.jit(jax.vmap(value_and_grad))(X, T)
        for i in range(3):
            one = jax.jit(value_and_grad)(X[i], T[i])
            assert_bitwise(np.asarray(batched[0][i]), np.asarray(one[0]), "loss")
            assert_bitwise(np.asarray(batched[1][i]), np.asarray(one[1]), "grad")


def test_per_example_gradients_with_vmap():
    """The usual use: per-example gradients of a linear model, vmap(grad) under jit."""
    rng = np.random.default_rng(0)
    X = jnp.asarray(rng.normal(size=(6, 4)).astype(np.float32))
    y = jnp.asarray(rng.integers(0, 3, 6).astype(np.int32))
    W = jnp.asarray(rng.normal(size=(4, 3)).astype(np.float32))

    def per_example(loss):
        return jax.jit(jax.vmap(jax.grad(lambda w, x, t: loss(x @ w, t)), in_axes=(None, 0, 0)))(W, X, y)

    got = per_example(flj.cross_entropy)
    ref = per_example(lambda z, t: REFERENCES["cross_entropy"](z, t, "mean"))
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- target gradients


TARGET_CASES = [c for c in representative_cases() if c.spec.kind == "elementwise"]


@pytest.mark.parametrize("case", TARGET_CASES, ids=str)
def test_target_cotangent_or_a_clear_error(case, callback):
    """Residual losses: the target's cotangent is minus the input's (against the reference's
    autodiff w.r.t. both); any other loss: NotImplementedError at trace time naming target."""
    x, t, kw = case.generate(np.float64)
    with x64():
        xj, tj, kwj = jax_args(x, t, kw)
        if not flj.residual_sign(case.spec):
            with pytest.raises(NotImplementedError, match=f"{case.loss}: differentiating with respect to target"):
                jax.jit(jax.grad(lambda b: call(case.loss, xj, b, kwj, "mean"))).trace(tj)
            # the input alone (the target a constant) is fine
            jax.grad(lambda a: call(case.loss, a, tj, kwj, "mean"))(xj)
            return
        ct = jnp.asarray(np.random.default_rng(2).uniform(0.5, 1.5, x.shape))
        for jit in (True, False):
            def run(a, b, c):
                loss, vjp = jax.vjp(lambda p, q: call(case.loss, p, q, kwj, "none"), a, b)
                return vjp(c)

            gx, gt = (jax.jit(run) if jit else run)(xj, tj, ct)
            _, vjp_ref = jax.vjp(lambda p, q: REFERENCES[case.loss](p, q, "none", **kwj), xj, tj)
            rx, rt = vjp_ref(ct)
            assert_grad_close(np.asarray(gx), np.asarray(rx), 1e-10)
            assert_grad_close(np.asarray(gt), np.asarray(rt), 1e-10)
            assert_bitwise(np.asarray(gt), -np.asarray(gx))


def test_residual_losses_are_the_ones_of_x_minus_y():
    assert {s.name for s in LOSSES if flj.residual_sign(s)} >= {"mse_loss", "l1_loss", "huber_loss", "smooth_l1_loss"}
    assert not any(flj.residual_sign(s) for s in LOSSES if s.kind == "classes")


@pytest.mark.parametrize("name,arg", [("binary_cross_entropy_with_logits", "weight"),
                                      ("binary_cross_entropy_with_logits", "pos_weight"),
                                      ("pinball_loss", "quantile"), ("cross_entropy", "weight")])
def test_differentiating_array_parameters_is_refused(name, arg):
    spec = BY_NAME[name]
    shape = (4, 3)
    x = jnp.asarray(np.random.default_rng(0).normal(size=shape).astype(np.float32))
    t = jnp.asarray([0, 1, 2, 1]) if spec.kind == "classes" else jnp.full(shape, 0.5, jnp.float32)
    p = jnp.full((3,), 0.5, jnp.float32)
    with pytest.raises(NotImplementedError, match=f"{name}: differentiating with respect to {arg}"):
        jax.grad(lambda v: getattr(flj, name)(x, t, **{arg: v}))(p)
    # the parameter as a constant (stop_gradient) is fine, and the input's gradient is right
    g = jax.grad(lambda a, v: getattr(flj, name)(a, t, **{arg: jax.lax.stop_gradient(v)}))(x, p)
    assert np.array_equal(np.asarray(g), getattr(fastloss, name + "_grad")(np.asarray(x), np.asarray(t),
                                                                           **{arg: np.asarray(p)})[1])


# --------------------------------------------------------------------------- second order


@pytest.mark.parametrize("name", ["mse_loss", "cross_entropy", "kl_div"])
def test_second_derivatives_are_a_clear_error(name):
    case = next(c for c in representative_cases() if c.loss == name)
    x, t, kw = case.generate(np.float32)
    xj, tj, kwj = jax_args(x, t, kw)

    def f(a):
        return call(name, a, tj, kwj, "mean")

    for transform in (lambda: jax.grad(lambda a: jnp.sum(jax.grad(f)(a)))(xj), lambda: jax.hessian(f)(xj),
                      lambda: jax.jit(jax.grad(lambda a: jnp.sum(jax.grad(f)(a) ** 2)))(xj)):
        with pytest.raises(NotImplementedError, match=f"{name}: second derivatives are not supported"):
            transform()
    with pytest.raises(TypeError, match="forward-mode"):  # JAX's own error for a custom_vjp
        jax.jvp(f, (xj,), (jnp.ones_like(xj),))


# --------------------------------------------------------------------------- errors

# The documented errors of every loss (cases.error_cases) that do not depend on the data's
# values: raised when the call is traced (jax.jit(...).trace), fastloss's type and message.
# Not here: n_threads (no such argument), object and str arrays (JAX refuses them itself).
RUNTIME = ("-value=", "-label=", "target-index=", "target-index-uint64")
TRACE_ERRORS = [e for spec in LOSSES for e in error_cases(spec.name)
                if not e.what.startswith("n_threads") and not e.what.endswith(("-object", "-str"))
                and not any(r in e.what for r in RUNTIME)]
RUNTIME_ERRORS = [e for spec in LOSSES for e in error_cases(spec.name) if any(r in e.what for r in RUNTIME)]


def error_call(err):
    """The error case's bad call as (function of the jax arrays, the jax arrays)."""
    x, t, kw = err.build(*error_base(err.loss))
    reduction = kw.pop("reduction", "mean")
    arrays = {k: v for k, v in kw.items() if isinstance(v, np.ndarray)}
    scalars = {k: v for k, v in kw.items() if k not in arrays}

    def f(a, b, arr):
        return getattr(flj, err.loss)(a, b, reduction=reduction, **arr, **scalars)

    return f, (jnp.asarray(np.asarray(x)), jnp.asarray(np.asarray(t)), {k: jnp.asarray(v) for k, v in arrays.items()})


@pytest.mark.parametrize("err", TRACE_ERRORS, ids=str)
def test_errors_are_raised_at_trace_time(err):
    with x64():
        f, args = error_call(err)
        with pytest.raises(err.exc) as info:
            jax.jit(f).trace(*args)
    message = str(info.value)
    assert message.startswith(f"fastloss.jax.{err.loss}: ")
    for mention in err.mentions:
        assert mention in message, (mention, message)


@pytest.mark.parametrize("err", RUNTIME_ERRORS, ids=str)
def test_value_errors_at_run_time(err, callback):
    """Checks of the data's values run in fastloss on the data: eagerly fastloss's
    ValueError (prefixed); under jax.jit the callback's error surfaces as
    jax.errors.JaxRuntimeError, whose message ends with fastloss's."""
    with x64():
        f, args = error_call(err)
        with pytest.raises(err.exc) as info:
            f(*args)
        assert str(info.value).startswith(f"fastloss.jax.{err.loss}: ")
        jitted = jax.jit(f)
        jitted.trace(*args)  # nothing to see at trace time
        with pytest.raises(jax.errors.JaxRuntimeError) as info:
            jax.block_until_ready(jitted(*args))
    message = str(info.value)
    assert f"{err.exc.__name__}: " in message
    for mention in err.mentions:
        assert mention in message.rsplit(f"{err.exc.__name__}: ", 1)[1], (mention, message)


def test_adapter_errors_name_the_argument():
    x = jnp.ones((4, 3))
    with pytest.raises(TypeError, match="input must be a floating-point array.*int32"):
        flj.mse_loss(jnp.ones((4, 3), jnp.int32), x)
    with pytest.raises(TypeError, match="delta must be a Python number.*traced"):
        jax.jit(lambda a, d: flj.huber_loss(a, a, delta=d))(x, 0.5)
    with pytest.raises(TypeError, match="label_smoothing must be a Python number.*traced"):
        jax.jit(lambda a, e: flj.cross_entropy(a, jnp.zeros(4, jnp.int32), label_smoothing=e))(x, 0.1)
    with pytest.raises(ValueError, match=r"mse_loss: input and target must have the same shape.*\(4, 3\).*\(3, 4\)"):
        jax.jit(flj.mse_loss).trace(x, x.T)
    # a jitted function with the scalar marked static is fine
    f = jax.jit(lambda a, d: flj.huber_loss(a, 2 * a, delta=d), static_argnums=1)
    assert float(f(x, 0.5)) == float(fastloss.huber_loss(np.ones((4, 3), np.float32), 2 * np.ones((4, 3), np.float32),
                                                         delta=0.5))


# --------------------------------------------------------------------------- plumbing


class Watch:
    """Replaces fastloss.NAME(_grad) in flj.FUNCTIONS, recording what they receive."""

    def __init__(self, monkeypatch, name):
        self.seen = []
        loss_fn, grad_fn = flj.FUNCTIONS[name]

        def record(fn, kind):
            def wrapped(x, t, **kw):
                self.seen.append((kind, x, t, kw))
                return fn(x, t, **kw)
            return wrapped

        monkeypatch.setitem(flj.FUNCTIONS, name, (record(loss_fn, "loss"), record(grad_fn, "grad")))


def test_one_fused_call_per_gradient_and_no_recomputation(monkeypatch):
    """Under jit(value_and_grad) the kernel runs once per call, the fused NAME_grad (the
    trace-time check ran before, once per signature); without differentiation NAME alone."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(7, 5)).astype(np.float32))
    y = jnp.asarray(rng.integers(0, 5, 7).astype(np.int32))
    watch = Watch(monkeypatch, "cross_entropy")
    f = jax.jit(jax.value_and_grad(lambda a: flj.cross_entropy(a, y, label_smoothing=0.05)))
    jax.block_until_ready(f(x))
    watch.seen.clear()
    for _ in range(3):
        jax.block_until_ready(f(x + 1))
    assert [kind for kind, *_ in watch.seen] == ["grad"] * 3
    watch.seen.clear()
    g = jax.jit(lambda a: flj.cross_entropy(a, y, label_smoothing=0.05))
    jax.block_until_ready(g(x))
    watch.seen.clear()
    jax.block_until_ready(g(x))
    assert [kind for kind, *_ in watch.seen] == ["loss"]


def test_the_default_callback_writes_the_gradient_into_xla_buffers(monkeypatch):
    """Where JAX has jax.experimental.buffer_callback, the adapter uses it: fastloss writes
    the gradient into XLA's output buffer (out=) and reads the inputs in place."""
    from jax.experimental.buffer_callback import buffer_callback

    assert flj._BUFFER_CALLBACK is buffer_callback
    watch = Watch(monkeypatch, "mse_loss")
    x = jnp.arange(6.0, dtype=jnp.float32).reshape(2, 3)
    loss, grad = jax.jit(jax.value_and_grad(flj.mse_loss))(x, x + 1)
    (kind, xa, ta, kw), = [seen for seen in watch.seen if "out" in seen[3]]
    assert kind == "grad" and kw["out"].shape == (2, 3) and kw["out"].dtype == np.float32
    assert float(loss) == 1.0 and np.array_equal(np.asarray(grad), np.full((2, 3), -1 / 3, np.float32))


def test_outside_transformations_fastloss_sees_the_arrays_without_copies(monkeypatch):
    """Input, weight and int64 class indices reach fastloss as views of the JAX arrays; int32
    indices (JAX's default) are converted to int64 (fastloss's fast path), one per sample."""
    watch = Watch(monkeypatch, "cross_entropy")
    x = jnp.asarray(np.random.default_rng(0).normal(size=(8, 5)).astype(np.float32))
    w = jnp.asarray(np.linspace(0.5, 1.5, 5, dtype=np.float32))
    y32 = jnp.asarray(np.arange(8, dtype=np.int32) % 5)
    loss32 = flj.cross_entropy(x, y32, weight=w)
    with x64():
        y64 = jnp.asarray(np.arange(8, dtype=np.int64) % 5)
        loss64 = flj.cross_entropy(x, y64, weight=w)
    (kind, xa, ta32, kw), (_, _, ta64, _) = watch.seen
    assert kind == "loss"
    assert xa.ctypes.data == x.unsafe_buffer_pointer() and kw["weight"].ctypes.data == w.unsafe_buffer_pointer()
    assert ta32.dtype == np.int64 and np.array_equal(ta32, np.asarray(y32))
    assert ta64.ctypes.data == y64.unsafe_buffer_pointer()
    assert_bitwise(np.asarray(loss32), np.asarray(loss64))


def test_scalar_parameters_reach_fastloss_as_passed(monkeypatch):
    """-0.0 and 0.0 are two static signatures (not one cache entry): each reaches fastloss."""
    watch = Watch(monkeypatch, "cross_entropy")
    x = jnp.ones((3, 4))
    y = jnp.zeros(3, jnp.int32)
    for eps in (0.0, -0.0, 0.1):
        jax.block_until_ready(jax.jit(lambda a, e=eps: flj.cross_entropy(a, y, label_smoothing=e))(x))
    seen = [kw["label_smoothing"] for kind, _, _, kw in watch.seen if kind == "loss"]
    assert {repr(v) for v in seen} == {"0.0", "-0.0", "0.1"}


# --------------------------------------------------------------------------- training


def test_training_loop_follows_the_jax_numpy_reference():
    """A 64-32-10 MLP on scikit-learn's digits, 60 steps of SGD with momentum 0.9 on
    mini-batches of 128, from the same initialisation, with flj.cross_entropy and with the
    optax reference (label smoothing 0.05), float32, each step one jit(value_and_grad). The
    two losses agree to float32 rounding at each step (different summation orders); the
    differences are carried through 60 updates without much growth: rtol 1e-5 on every
    step's loss and 1e-5 absolute on the final weights (of order 0.1-1)."""
    datasets = pytest.importorskip("sklearn.datasets")
    digits = datasets.load_digits()
    X = jnp.asarray((digits.data / 16.0).astype(np.float32))
    Y = jnp.asarray(digits.target.astype(np.int32))
    key = jax.random.PRNGKey(0)
    k1, k2 = jax.random.split(key)
    init = [jax.random.normal(k1, (64, 32)) * 0.2, jnp.zeros(32), jax.random.normal(k2, (32, 10)) * 0.2, jnp.zeros(10)]
    batches = np.random.default_rng(1).integers(0, X.shape[0], (60, 128))

    def train(loss_fn):
        def objective(params, xb, yb):
            w1, b1, w2, b2 = params
            return loss_fn(jnp.tanh(xb @ w1 + b1) @ w2 + b2, yb)

        @jax.jit
        def step(params, velocity, xb, yb):
            loss, grads = jax.value_and_grad(objective)(params, xb, yb)
            velocity = [0.9 * v + g for v, g in zip(velocity, grads)]
            return [p - 0.1 * v for p, v in zip(params, velocity)], velocity, loss

        params, velocity, curve = list(init), [jnp.zeros_like(p) for p in init], []
        for idx in batches:
            params, velocity, loss = step(params, velocity, X[idx], Y[idx])
            curve.append(float(loss))
        return np.array(curve), params

    ours, our_params = train(lambda z, y: flj.cross_entropy(z, y, label_smoothing=0.05))
    theirs, their_params = train(lambda z, y: REFERENCES["cross_entropy"](z, y, "mean", label_smoothing=0.05))
    assert ours[-1] < 0.5 * ours[0]  # it does learn
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=0)
    for a, b in zip(our_params, their_params):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-5)


# --------------------------------------------------------------------------- docs


def test_docs_hold_the_reference_table():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    assert flj.reference_table() in (root / "docs" / "API.md").read_text(), (
        "docs/API.md, 'JAX adapter': paste fastloss.jax.reference_table()")
    readme = (root / "README.md").read_text()
    assert "## JAX" in readme and "fastloss.jax as flj" in readme
    assert readme.index("## PyTorch") < readme.index("## JAX") < readme.index("## Gradient boosting")
