"""squareplus against an extended-precision NumPy reference.

The reference is evaluated in `np.longdouble` (64-bit significand on x86-64,
11 more bits than float64) with the cancellation-free form of the formula, on
inputs that are exactly representable in the dtype under test. Accuracy is
measured as a relative bound of 4 machine epsilons wherever the exact result
is a normal number of the dtype; below the smallest normal number `tiny`
(the subnormal range, which TensorFlow and XLA flush to zero on CPUs) the
bound is an absolute `tiny`.
"""

import keras
import ml_dtypes
import numpy as np
import pytest
from keras import ops

from keras_tricks import activations, layers, testing
from keras_tricks.activations import squareplus

DTYPES = ["float16", "bfloat16", "float32", "float64"]
NP_DTYPES = {
    "float16": np.float16,
    "bfloat16": ml_dtypes.bfloat16,
    "float32": np.float32,
    "float64": np.float64,
}


def _finfo(dtype):
    return ml_dtypes.finfo(NP_DTYPES[dtype])


def _skip_unsupported(dtype):
    if dtype == "float64" and keras.backend.backend() == "jax":
        import jax

        if not jax.config.jax_enable_x64:
            pytest.skip("JAX computes float64 in float32 unless jax_enable_x64 is set")


def _grid(dtype, per_sign=4000):
    """Exactly representable inputs of `dtype`: a dense log-spaced grid of both
    signs from the smallest subnormal to the largest finite value, a linear
    grid around zero, and the special points."""
    info = _finfo(dtype)
    smallest = float(info.smallest_subnormal)
    largest = float(info.max)
    mags = np.logspace(np.log10(smallest), np.log10(largest), per_sign)
    linear = np.linspace(-16.0, 16.0, 2001)
    special = [
        0.0,
        smallest,
        float(info.tiny),
        float(info.eps),
        1.0,
        2.0,
        255.0,
        256.0,
        300.0,
        1000.0,
        65504.0,
        largest,
    ]
    values = np.concatenate([mags, -mags, linear, special, -np.asarray(special)])
    with np.errstate(over="ignore"):
        values = values.astype(NP_DTYPES[dtype])
    values = values[np.isfinite(values.astype(np.float64))]
    return np.unique(values.astype(np.float64))


def _reference(x, b):
    x = np.asarray(x, dtype=np.longdouble)
    b = np.longdouble(b)
    r = np.sqrt(x * x + b)
    # Both branches are free of cancellation: f(x) = b / (2 (r - x)) for x < 0.
    # (np.where evaluates both; the unused one may divide by zero.)
    with np.errstate(divide="ignore"):
        return np.where(x >= 0, (x + r) / 2, b / (2 * (r - x)))


def _reference_grad(x, b):
    x = np.asarray(x, dtype=np.longdouble)
    b = np.longdouble(b)
    r = np.sqrt(x * x + b)
    # f'(x) = (1 + x / r) / 2 = b / (2 r (r - x)) for x < 0.
    with np.errstate(divide="ignore"):
        return np.where(x >= 0, (1 + x / r) / 2, b / (2 * r * (r - x)))


def _assert_within_eps(actual, exact, dtype, what, ulps=4.0):
    info = _finfo(dtype)
    actual = np.asarray(actual, dtype=np.longdouble)
    assert np.all(np.isfinite(actual)), f"{what}: non-finite values"
    tiny = np.longdouble(float(info.tiny))
    allowed = np.where(np.abs(exact) >= tiny, ulps * np.longdouble(float(info.eps)) * np.abs(exact), tiny)
    err = np.abs(actual - exact)
    worst = int(np.argmax(err / allowed))
    assert np.all(err <= allowed), (
        f"{what}: {int(np.sum(err > allowed))} values beyond the bound; worst at "
        f"x-index {worst}: {float(actual[worst])!r} vs exact {float(exact[worst])!r} "
        f"({float(err[worst] / allowed[worst]):.2f} times the allowed error)"
    )


def _values_and_grads(x64, dtype, b):
    x = ops.convert_to_tensor(x64.astype(NP_DTYPES[dtype]), dtype=dtype)

    def total(t):
        return ops.sum(ops.cast(squareplus(t, b=b), "float64" if dtype == "float64" else "float32"))

    y = squareplus(x, b=b)
    _, (g,) = testing.value_and_grad(total, x)
    assert keras.backend.standardize_dtype(y.dtype) == dtype
    assert keras.backend.standardize_dtype(g.dtype) == dtype
    return testing.to_numpy(y).astype(np.float64), testing.to_numpy(g).astype(np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
def test_values_and_gradients_within_4_eps_over_whole_range(dtype):
    _skip_unsupported(dtype)
    x = _grid(dtype)
    y, g = _values_and_grads(x, dtype, 4.0)
    exact = _reference(x, 4.0)
    # The exact value must first be representable: round it to the dtype.
    _assert_within_eps(y, exact, dtype, f"squareplus values ({dtype})")
    _assert_within_eps(g, _reference_grad(x, 4.0), dtype, f"squareplus gradient ({dtype})")


@pytest.mark.parametrize("b", [1e-3, 0.5, 1.0, 100.0, 1e6])
def test_other_b_values_float32(b):
    x = _grid("float32", per_sign=1500)
    y, g = _values_and_grads(x, "float32", b)
    _assert_within_eps(y, _reference(x, b), "float32", f"values, b={b}")
    _assert_within_eps(g, _reference_grad(x, b), "float32", f"gradient, b={b}")


def test_hand_computed_points():
    # f(0) = sqrt(b) / 2; f(2) = (2 + sqrt(8)) / 2 = 1 + sqrt(2) with b = 4;
    # f(-300) = 4 / (2 (sqrt(90004) + 300)), which the naive formula loses.
    x = np.array([0.0, 2.0, -300.0, 300.0], dtype="float32")
    y = testing.to_numpy(squareplus(x))
    np.testing.assert_allclose(
        y,
        [1.0, 1.0 + np.sqrt(2.0), 2.0 / (np.sqrt(90004.0) + 300.0), (300.0 + np.sqrt(90004.0)) / 2],
        rtol=2e-7,
    )
    assert testing.to_numpy(squareplus(ops.convert_to_tensor(np.array([0.0], "float32")), b=9.0))[0] == 1.5


def test_gradient_at_zero_is_one_half_and_matches_finite_differences():
    # float64 where the backend computes it (JAX needs jax_enable_x64).
    dtype = "float32" if keras.backend.backend() == "jax" else "float64"
    h, rtol = (1e-2, 1e-4) if dtype == "float32" else (1e-5, 1e-8)
    x = np.array([-30.0, -3.0, -0.5, 0.0, 0.5, 3.0, 30.0])

    def f(v):
        return testing.to_numpy(squareplus(ops.convert_to_tensor(v, dtype=dtype))).astype(np.float64)

    _, (g,) = testing.value_and_grad(lambda t: ops.sum(squareplus(t)), ops.convert_to_tensor(x, dtype=dtype))
    g = testing.to_numpy(g)
    assert g[3] == 0.5
    fd = (f(x + h) - f(x - h)) / (2 * h)
    np.testing.assert_allclose(g, fd, rtol=rtol)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_infinities_and_nan(dtype):
    x = ops.cast(ops.convert_to_tensor(np.array([np.inf, -np.inf, np.nan], "float32")), dtype)
    y = testing.to_numpy(squareplus(x))
    assert y[0] == np.inf and y[1] == 0.0 and np.isnan(y[2])


def test_integer_inputs_are_cast_to_floatx():
    y = squareplus(ops.convert_to_tensor(np.array([0, 2], "int32")))
    assert keras.backend.standardize_dtype(y.dtype) == keras.config.floatx()
    np.testing.assert_allclose(testing.to_numpy(y), [1.0, 1 + np.sqrt(2)], rtol=1e-6)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), -float("inf")])
def test_non_positive_or_non_finite_b_is_a_value_error(bad):
    with pytest.raises(ValueError, match="`b`"):
        squareplus(np.ones(2, "float32"), b=bad)
    with pytest.raises(ValueError, match="`b`"):
        layers.SquarePlus(b=bad)


@pytest.mark.parametrize("bad", ["4", None, True, [4.0]])
def test_non_number_b_is_a_type_error(bad):
    with pytest.raises(TypeError, match="`b`"):
        squareplus(np.ones(2, "float32"), b=bad)
    with pytest.raises(TypeError, match="`b`"):
        layers.SquarePlus(b=bad)


def test_b_outside_the_range_of_the_dtype_is_a_value_error():
    with pytest.raises(ValueError, match="`b` must lie in"):
        squareplus(np.ones(2, "float32"), b=1e35)
    with pytest.raises(ValueError, match="`b` must lie in"):
        squareplus(np.ones(2, "float32"), b=1e-39)


def test_registered_name_resolves_and_dense_saves(tmp_path):
    assert keras.saving.get_registered_name(squareplus) == "keras_tricks>squareplus"
    assert keras.saving.get_registered_object("keras_tricks>squareplus") is squareplus
    model = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(4, activation=activations.squareplus),
            layers.SquarePlus(b=2.0),
        ]
    )
    x = np.random.default_rng(0).normal(size=(5, 3)).astype("float32")
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.layers[0].activation is squareplus
    assert loaded.layers[1].b == 2.0
    np.testing.assert_array_equal(testing.to_numpy(loaded(x)), testing.to_numpy(model(x)))


@pytest.mark.skipif(
    keras.backend.backend() == "torch", reason="jit_compile means XLA on TensorFlow and JAX only"
)
def test_values_within_4_eps_under_xla():
    # XLA's algebraic simplifier rewrites expressions (e.g. factors
    # a * c + b * c into (a + b) * c), so accuracy must hold compiled too.
    x = _grid("float32", per_sign=1500)
    model = keras.Sequential([keras.Input((1,)), layers.SquarePlus()])
    model.compile(jit_compile=True)
    y = model.predict(x[:, None].astype("float32"), batch_size=len(x), verbose=0)[:, 0]
    _assert_within_eps(y.astype(np.float64), _reference(x, 4.0), "float32", "squareplus values under XLA")


# --------------------------------------------------- empty inputs, infinities


EMPTY_SHAPES = [(0, 3), (2, 0), (0,), (0, 0, 4)]


@pytest.mark.parametrize("dtype", ["float16", "float32"])
@pytest.mark.parametrize("shape", EMPTY_SHAPES)
def test_empty_inputs_give_empty_values_and_gradients(shape, dtype):
    # Keras's TensorFlow `add` took (0, 3) + (0, 3) for input + bias and
    # crashed in BiasAdd.
    x = ops.convert_to_tensor(np.zeros(shape, dtype))
    y = squareplus(x)
    assert tuple(y.shape) == shape
    assert keras.backend.standardize_dtype(y.dtype) == dtype
    value, (g,) = testing.value_and_grad(lambda t: ops.sum(ops.cast(squareplus(t), "float32")), x)
    assert tuple(g.shape) == shape and float(testing.to_numpy(value)) == 0.0


def test_dense_with_squareplus_on_an_empty_batch():
    dense = keras.layers.Dense(2, activation=squareplus)
    x = np.random.default_rng(0).normal(size=(4, 3)).astype("float32")
    full = testing.to_numpy(dense(x))
    empty = dense(np.zeros((0, 3), "float32"))
    assert tuple(empty.shape) == (0, 2)
    np.testing.assert_array_equal(testing.to_numpy(dense(x[:0])), full[:0])
    # Gradient with respect to the weights through an empty batch: zero.
    _, (grads,) = testing.value_and_grad(
        lambda w: _dense_sum(dense, w, np.zeros((0, 3), "float32")),
        [ops.convert_to_tensor(v.value) for v in dense.trainable_variables],
    )
    for g, v in zip(grads, dense.trainable_variables):
        assert tuple(g.shape) == tuple(v.shape)
        np.testing.assert_array_equal(testing.to_numpy(g), 0.0)


def _dense_sum(dense, weights, x):
    with keras.StatelessScope(state_mapping=list(zip(dense.trainable_variables, weights))):
        return ops.sum(dense(x))


def test_compiled_model_on_an_empty_batch():
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(2, activation=squareplus), layers.SquarePlus()]
    )
    model.compile(optimizer="sgd", loss="mse", jit_compile=keras.backend.backend() != "torch")
    out = model.predict_on_batch(np.zeros((0, 3), "float32"))
    assert tuple(np.shape(out)) == (0, 2)


def _infinity_case(dtype):
    x = ops.cast(
        ops.convert_to_tensor(
            np.array([np.inf, -np.inf, 1e30, -1e30], "float64").astype(
                "float32" if dtype != "float64" else "float64"
            )
        ),
        dtype,
    )
    y = testing.to_numpy(squareplus(x)).astype(np.float64)
    _, (g,) = testing.value_and_grad(lambda t: ops.sum(ops.cast(squareplus(t), "float32")), x)
    return testing.to_numpy(x).astype(np.float64), y, testing.to_numpy(g).astype(np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gradient_at_plus_infinity_is_one_and_at_minus_infinity_zero(dtype):
    _skip_unsupported(dtype)
    x, y, g = _infinity_case(dtype)
    # f(+inf) = +inf, f(-inf) = 0; f'(x) -> 1 and 0 (was NaN at +inf: inf / inf).
    assert y[0] == np.inf and y[1] == 0.0
    assert g[0] == 1.0 and g[1] == 0.0
    # Large finite inputs (inf in float16 after the cast): same limits.
    if np.isfinite(x[2]):
        assert g[2] == 1.0 and 0.0 <= g[3] < float(_finfo(dtype).eps)
    assert np.all(np.isfinite(g))


@pytest.mark.skipif(
    keras.backend.backend() == "torch", reason="jit_compile means XLA on TensorFlow and JAX only"
)
def test_gradient_at_infinities_under_xla():
    # XLA may rewrite the selection; the limits must survive compilation.
    compiled = _xla(squareplus)
    x = np.array([np.inf, -np.inf, 2.0, -2.0], "float32")
    y = testing.to_numpy(compiled(ops.convert_to_tensor(x)))
    _, (g,) = testing.value_and_grad(lambda t: ops.sum(compiled(t)), x)
    g = testing.to_numpy(g)
    assert y[0] == np.inf and y[1] == 0.0
    assert g[0] == 1.0 and g[1] == 0.0
    r = np.sqrt(8.0)
    np.testing.assert_allclose(g[2:], [(1 + 2 / r) / 2, (1 - 2 / r) / 2], rtol=1e-6)


def _xla(fn):
    if keras.backend.backend() == "jax":
        import jax

        return jax.jit(fn)
    import tensorflow as tf

    return tf.function(fn, jit_compile=True)


@pytest.mark.parametrize("b", [np.float32(2.0), np.float64(2.0), np.int64(2), np.float16(2.0)])
def test_numpy_scalar_b_is_accepted_and_stored_as_a_python_float(b):
    x = np.array([-1.0, 0.0, 3.0], "float32")
    np.testing.assert_allclose(
        testing.to_numpy(squareplus(x, b=b)), (x + np.sqrt(x.astype(np.float64) ** 2 + 2.0)) / 2, rtol=1e-6
    )
    layer = layers.SquarePlus(b=b)
    assert type(layer.b) is float and layer.b == 2.0
    import json

    json.dumps(layer.get_config())


@pytest.mark.parametrize(
    "bad", [np.bool_(True), np.float32("nan"), np.float64("inf"), np.float32(0.0), np.int64(-1)]
)
def test_numpy_scalar_b_checked_like_a_python_number(bad):
    error = TypeError if isinstance(bad, np.bool_) else ValueError
    with pytest.raises(error, match="`b`"):
        squareplus(np.ones(2, "float32"), b=bad)
    with pytest.raises(error, match="`b`"):
        layers.SquarePlus(b=bad)
