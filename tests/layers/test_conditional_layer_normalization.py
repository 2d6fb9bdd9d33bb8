import keras
import numpy as np
import pytest

from keras_tricks import _numerics, layers, testing
from keras_tricks.layers import ConditionalLayerNormalization

RNG = np.random.default_rng(20190722)


def _normal(*shape, scale=1.0, loc=0.0):
    return (loc + scale * RNG.normal(size=shape)).astype("float32")


# --------------------------------------------------------------------------
# Independent float64 NumPy reference of the formula
# --------------------------------------------------------------------------


def reference(x, cond, weights, axes, epsilon, rms=False, hidden=None, act=None):
    """gamma(c) = gamma + h W_g, beta(c) = beta + h W_b, y = norm(x) gamma(c) + beta(c).

    `weights` maps names to float64 arrays: gamma, beta (shape S of the
    normalised axes), gamma_kernel, beta_kernel (shape (h, *S)) and, when
    `hidden` is set, hidden_kernel. Missing gamma/beta means scale/center off.
    """
    x = np.asarray(x, np.float64)
    h = np.asarray(cond, np.float64)
    ndim = x.ndim
    axes = sorted(a % ndim for a in axes)
    kept = [i for i in range(ndim) if i not in axes]
    if hidden is not None:
        h = act(h @ weights["hidden_kernel"])
    if rms:
        normed = x / np.sqrt(np.mean(x**2, axis=tuple(axes), keepdims=True) + epsilon)
    else:
        mean = np.mean(x, axis=tuple(axes), keepdims=True)
        var = np.mean((x - mean) ** 2, axis=tuple(axes), keepdims=True)
        normed = (x - mean) / np.sqrt(var + epsilon)

    def per_example(param, kernel):
        delta = np.tensordot(h, kernel, axes=1)  # cond's leading axes + S
        if h.ndim == 2 and len(kept) > 1:  # (batch, c): broadcast
            delta = delta.reshape((delta.shape[0],) + (1,) * (len(kept) - 1) + delta.shape[1:])
        value = delta + param
        order = kept + axes
        return np.transpose(value, [order.index(i) for i in range(ndim)])

    out = normed
    if "gamma" in weights:
        out = out * per_example(weights["gamma"], weights["gamma_kernel"])
    if "beta" in weights:
        out = out + per_example(weights["beta"], weights["beta_kernel"])
    return out


def _randomise(layer, seed=0):
    """Give every weight a non-trivial value; return them as float64."""
    rng = np.random.default_rng(seed)
    values = {}
    for name in ("gamma", "beta", "gamma_kernel", "beta_kernel", "hidden_kernel"):
        var = getattr(layer, name, None)
        if var is None:
            continue
        value = rng.normal(scale=0.5, size=tuple(var.shape))
        if name == "gamma":
            value += 1.0
        var.assign(value.astype(var.dtype))
        values[name] = value.astype(var.dtype).astype(np.float64)
    return values


CASES = {
    # name: (x shape, cond shape, kwargs)
    "last_axis_batch_cond": ((3, 5, 8), (3, 4), {}),
    "last_axis_position_cond": ((3, 5, 8), (3, 5, 4), {}),
    "rank2": ((6, 8), (6, 3), {}),
    "rank4_batch_cond": ((2, 3, 4, 6), (2, 5), {}),
    "rank4_position_cond": ((2, 3, 4, 6), (2, 3, 4, 5), {}),
    "two_trailing_axes": ((2, 3, 4, 6), (2, 5), {"axis": [-2, -1]}),
    "two_trailing_axes_position": ((2, 3, 4, 6), (2, 3, 5), {"axis": [2, 3]}),
    "middle_axis": ((3, 7, 4), (3, 2), {"axis": 1}),
    "middle_axis_position": ((3, 7, 4), (3, 4, 2), {"axis": 1}),
    "split_axes": ((2, 3, 4, 5), (2, 4, 3), {"axis": [1, 3]}),
    "no_center": ((3, 5, 8), (3, 4), {"center": False}),
    "no_scale": ((3, 5, 8), (3, 5, 4), {"scale": False}),
    "hidden_units": ((3, 5, 8), (3, 6), {"hidden_units": 3, "hidden_activation": "tanh"}),
    "rms": ((3, 5, 8), (3, 4), {"rms": True}),
    "rms_position_hidden": ((3, 5, 8), (3, 5, 4), {"rms": True, "hidden_units": 2}),
    "rms_no_center_axes": ((2, 3, 4, 6), (2, 5), {"rms": True, "center": False, "axis": [2, 3]}),
    "small_epsilon": ((3, 5, 8), (3, 4), {"epsilon": 1e-12}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_float64_reference_with_nonzero_condition_weights(case):
    x_shape, c_shape, kwargs = CASES[case]
    x = _normal(*x_shape, scale=2.0, loc=0.5)
    cond = _normal(*c_shape)
    layer = ConditionalLayerNormalization(**kwargs)
    layer([x, cond])
    weights = _randomise(layer)
    got = testing.to_numpy(layer([x, cond]))
    act = {"tanh": np.tanh}.get(kwargs.get("hidden_activation"), lambda v: v)
    expected = reference(
        x,
        cond,
        weights,
        layer.axis if isinstance(layer.axis, list) else [layer.axis],
        layer.epsilon,
        rms=layer.rms,
        hidden=kwargs.get("hidden_units"),
        act=act,
    )
    # Reductions of a few dozen float32 values: a few ulps of the result.
    testing.assert_close(got, expected, "float32", tolerance=4.0)
    assert got.dtype == np.float32


def test_float64_layer_matches_reference_to_float64_precision():
    if keras.backend.backend() == "jax":
        import jax

        if not jax.config.jax_enable_x64:
            pytest.skip("JAX runs float64 as float32 unless jax_enable_x64 is set")
    x = _normal(4, 6, 10, scale=3.0, loc=-2.0).astype("float64")
    cond = _normal(4, 6, 3).astype("float64")
    layer = ConditionalLayerNormalization(hidden_units=5, hidden_activation="relu", dtype="float64")
    layer([x, cond])
    weights = _randomise(layer, seed=3)
    got = testing.to_numpy(layer([x, cond]))
    expected = reference(x, cond, weights, [-1], layer.epsilon, hidden=5, act=lambda v: np.maximum(v, 0.0))
    assert got.dtype == np.float64
    testing.assert_close(got, expected, "float64", tolerance=4.0)


def test_condition_changes_the_output_once_trained():
    # With W_g, W_b != 0 two conditions give different outputs, and the
    # difference is exactly normed * (h1 - h2) W_g + (h1 - h2) W_b.
    x = _normal(2, 4, 6)
    c1, c2 = _normal(2, 3), _normal(2, 3)
    layer = ConditionalLayerNormalization()
    layer([x, c1])
    _randomise(layer, seed=1)
    y1 = testing.to_numpy(layer([x, c1]))
    y2 = testing.to_numpy(layer([x, c2]))
    assert np.max(np.abs(y1 - y2)) > 0.1


# --------------------------------------------------------------------------
# At initialisation: exactly Keras's LayerNormalization / RMSNormalization
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, x_shape",
    [
        ({}, (3, 5, 8)),
        ({"axis": [1, 2]}, (3, 5, 8)),
        ({"axis": 1}, (3, 5, 8)),
        ({"center": False}, (3, 5, 8)),
        ({"scale": False}, (3, 5, 8)),
        ({"epsilon": 1e-5}, (4, 16)),
    ],
)
@pytest.mark.parametrize("cond_form", ["batch", "position"])
def test_at_init_equals_keras_layer_normalization_for_any_condition(kwargs, x_shape, cond_form):
    if keras.backend.backend() == "torch" and kwargs.get("axis") == 1:
        pytest.skip(
            "keras.layers.LayerNormalization(axis=1) itself fails on PyTorch "
            "(F.layer_norm only normalises trailing axes); our layer is checked "
            "for axis=1 against the NumPy reference instead"
        )
    x = _normal(*x_shape, scale=4.0, loc=3.0)
    keras_ln = keras.layers.LayerNormalization(**kwargs)
    keras_ln.build(x_shape)
    # Trained-looking gamma / beta, copied across as when swapping a pretrained
    # LayerNorm for the conditional one.
    for var in keras_ln.weights:
        var.assign(RNG.normal(loc=1.0 if "gamma" in var.path else 0.0, size=var.shape))
    axis = kwargs.get("axis", -1)
    axes = sorted(a % len(x_shape) for a in (axis if isinstance(axis, list) else [axis]))
    kept = [x_shape[i] for i in range(len(x_shape)) if i not in axes]
    cond_shape = (x_shape[0], 7) if cond_form == "batch" else tuple(kept) + (7,)
    ours = ConditionalLayerNormalization(hidden_units=4, **kwargs)
    for cond in (_normal(*cond_shape, scale=100.0), np.zeros(cond_shape, "float32")):
        ours([x, cond])
        if ours.gamma is not None:
            ours.gamma.assign(keras_ln.gamma.value)
        if ours.beta is not None:
            ours.beta.assign(keras_ln.beta.value)
        testing.assert_close(ours([x, cond]), keras_ln(x), "float32", tolerance=4.0)


@pytest.mark.parametrize("axis", [-1, [1, 2]])
def test_rms_at_init_equals_keras_rms_normalization(axis):
    x = _normal(3, 5, 8, scale=2.0, loc=1.0)
    keras_rms = keras.layers.RMSNormalization(axis=axis)
    keras_rms.build(x.shape)
    keras_rms.scale.assign(RNG.normal(loc=1.0, size=keras_rms.scale.shape))
    ours = ConditionalLayerNormalization(axis=axis, rms=True)
    assert ours.epsilon == keras_rms.epsilon  # the same default as the layer it mirrors
    ours([x, _normal(3, 2)])
    ours.gamma.assign(keras_rms.scale.value)
    for cond in (_normal(3, 2, scale=50.0), _normal(3, 2)):
        testing.assert_close(ours([x, cond]), keras_rms(x), "float32", tolerance=4.0)


def test_default_epsilon_is_that_of_layer_normalization():
    assert ConditionalLayerNormalization().epsilon == keras.layers.LayerNormalization().epsilon


# --------------------------------------------------------------------------
# Precision: float32 statistics under mixed policies, no NaN anywhere
# --------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_statistics_in_float32(policy):
    # Half-precision inputs, as the previous layer of a mixed model gives
    # them, with a large common offset: in float16 the sum of 32 values near
    # 3000 overflows (max 65504) and the variance of the rest is lost.
    layer = ConditionalLayerNormalization(dtype=policy)
    compute = layer.compute_dtype
    x = keras.ops.cast(3000.0 + 20.0 * _normal(4, 6, 32), compute)
    cond = keras.ops.cast(_normal(4, 3), compute)
    layer([x, cond])
    weights = _randomise(layer, seed=2)
    got = layer([x, cond])
    assert keras.backend.standardize_dtype(got.dtype) == compute
    assert all(keras.backend.standardize_dtype(w.dtype) == "float32" for w in layer.weights)
    expected = reference(testing.to_numpy(x), testing.to_numpy(cond), weights, [-1], layer.epsilon)
    # Only the final rounding to the half type: half an ulp of the output.
    testing.assert_close(got, expected, compute, tolerance=1.0)


@pytest.mark.parametrize("policy", ["float32", "mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("rms", [False, True])
def test_no_nan_for_huge_magnitudes_and_zero_variance(policy, rms):
    compute = keras.mixed_precision.DTypePolicy(policy).compute_dtype
    big = float(_numerics.finfo(compute).max) / 4  # 16376 (float16), ~8.5e37 otherwise
    x = np.stack(
        [
            _normal(5, 16, scale=big / 8),  # huge spread
            np.full((5, 16), big, "float32"),  # huge and constant
            np.zeros((5, 16), "float32"),  # zero variance
            np.full((5, 16), 1.5, "float32"),  # zero variance, offset
        ]
    ).astype("float32")
    x = testing.to_numpy(keras.ops.cast(keras.ops.cast(x, compute), "float32"))
    cond = _normal(4, 5, 3, scale=10.0)
    layer = ConditionalLayerNormalization(rms=rms, dtype=policy)
    layer([x, cond])
    weights = _randomise(layer, seed=4)

    def objective(x, cond):
        return keras.ops.sum(keras.ops.cast(layer([x, cond]), "float32") ** 2)

    value, grads = testing.value_and_grad(objective, x, cond)
    y = testing.to_numpy(layer([x, cond]))
    assert np.all(np.isfinite(y))
    assert np.isfinite(testing.to_numpy(value))
    for g in grads:
        assert np.all(np.isfinite(testing.to_numpy(g)))
    # The huge-spread row is normalised correctly (not flushed to zero), and
    # a zero-variance row gives exactly beta(c) (or 0 * ... for rms).
    scaled = x / big  # the reference in float64 after an exact rescaling
    expected = reference(scaled[:1], cond[:1], weights, [-1], layer.epsilon / big**2, rms=rms)
    testing.assert_close(y[:1], expected, compute, tolerance=4.0)
    zero = reference(x[2:3], cond[2:3], weights, [-1], layer.epsilon, rms=rms)
    testing.assert_close(y[2:3], zero, compute, tolerance=4.0)


# --------------------------------------------------------------------------
# Masks, shapes, bad input, config
# --------------------------------------------------------------------------


def test_mask_passes_through_in_a_model():
    tokens = keras.Input((None,), dtype="int32")
    label = keras.Input((), dtype="int32")
    x = keras.layers.Embedding(20, 8, mask_zero=True)(tokens)
    cond = keras.layers.Embedding(3, 4)(label)
    y = ConditionalLayerNormalization()([x, cond])
    # Masked average pooling reads the mask: it ignores the padded steps.
    out = keras.layers.GlobalAveragePooling1D()(y)
    model = keras.Model([tokens, label], out)
    a = np.array([[3, 4, 5, 0, 0]])
    b = np.array([[3, 4, 5, 7, 9]])
    la = np.array([1])
    ya, yb = model([a, la]), model([b[:, :3], la])
    testing.assert_close(ya, yb, "float32", tolerance=4.0)
    mask = np.array([[True, True, False]])
    layer = ConditionalLayerNormalization()
    got = layer.compute_mask([np.zeros((1, 3, 2)), np.zeros((1, 2))], [mask, None])
    assert np.array_equal(testing.to_numpy(got), mask)


@pytest.mark.parametrize(
    "x_shape, cond_shape, kwargs",
    [
        ((3, 5, 8), (3, 6, 4), {}),  # per-position, wrong sequence length
        ((3, 5, 8), (3, 5, 8, 4), {}),  # per-position including the features
        ((3, 5, 8), (3,), {}),  # no feature axis
        ((3, 5, 8), (2, 4), {}),  # other batch size
        ((3, 5, 8), (3, 1, 4), {}),  # a (batch, 1, c) broadcast form is not guessed
        ((3, 4, 5, 6), (3, 4, 5, 2), {"axis": [2, 3]}),
    ],
)
def test_bad_condition_shapes_raise_with_both_shapes(x_shape, cond_shape, kwargs):
    layer = ConditionalLayerNormalization(**kwargs)
    with pytest.raises(ValueError) as info:
        layer([np.zeros(x_shape, "float32"), np.zeros(cond_shape, "float32")])
    message = str(info.value)
    assert str(x_shape) in message and str(cond_shape) in message
    # The same at build time with symbolic (static) shapes.
    with pytest.raises(ValueError) as info:
        ConditionalLayerNormalization(**kwargs).build([x_shape, cond_shape])
    assert str(x_shape) in str(info.value) and str(cond_shape) in str(info.value)


def test_bad_symbolic_shapes_raise_when_the_model_is_built():
    x = keras.Input((5, 8))
    cond = keras.Input((6, 4))
    with pytest.raises(ValueError, match=r"\(None, 5, 8\).*\(None, 6, 4\)"):
        ConditionalLayerNormalization()([x, cond])


def test_symbolic_shapes_with_unknown_sequence_length():
    x = keras.Input((None, 8))
    y1 = ConditionalLayerNormalization()([x, keras.Input((4,))])
    y2 = ConditionalLayerNormalization()([x, keras.Input((None, 4))])
    assert tuple(y1.shape) == (None, None, 8) and tuple(y2.shape) == (None, None, 8)


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"axis": "last"}, TypeError),
        ({"axis": [1.0]}, TypeError),
        ({"center": "yes"}, TypeError),
        ({"center": False, "scale": False}, ValueError),
        ({"epsilon": -1.0}, ValueError),
        ({"epsilon": float("nan")}, ValueError),
        ({"hidden_units": 0}, ValueError),
        ({"hidden_units": 2.5}, TypeError),  # a wrong type is a TypeError
    ],
)
def test_bad_arguments(kwargs, error):
    with pytest.raises(error, match="|".join(kwargs)):
        ConditionalLayerNormalization(**kwargs)


@pytest.mark.parametrize(
    "inputs, match",
    [
        (np.zeros((2, 3, 4), "float32"), r"\[x, cond\]"),
    ],
)
def test_not_a_pair_raises(inputs, match):
    with pytest.raises(ValueError, match=match):
        ConditionalLayerNormalization()(inputs)


def test_axis_errors():
    x, c = np.zeros((2, 3, 4), "float32"), np.zeros((2, 2), "float32")
    with pytest.raises(ValueError, match="batch axis"):
        ConditionalLayerNormalization(axis=0)([x, c])
    with pytest.raises(ValueError, match="out of bounds"):
        ConditionalLayerNormalization(axis=3)([x, c])


def test_weights_shapes_and_names():
    layer = ConditionalLayerNormalization(axis=[2, 3], hidden_units=5)
    layer.build([(2, 3, 4, 6), (2, 7)])
    shapes = {w.name: tuple(w.shape) for w in layer.weights}
    assert shapes == {
        "hidden_kernel": (7, 5),
        "gamma": (4, 6),
        "gamma_kernel": (5, 4, 6),
        "beta": (4, 6),
        "beta_kernel": (5, 4, 6),
    }


def test_config_round_trip_keeps_every_argument():
    layer = ConditionalLayerNormalization(
        axis=[1, 2],
        epsilon=1e-5,
        center=False,
        rms=True,
        hidden_units=3,
        hidden_activation="gelu",
        hidden_initializer="he_normal",
        gamma_regularizer="l2",
        condition_regularizer="l1",
        hidden_regularizer="l2",
        gamma_constraint="non_neg",
    )
    clone = ConditionalLayerNormalization.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert clone.axis == [1, 2] and clone.rms and clone.hidden_units == 3


# --------------------------------------------------------------------------
# The shared harness
# --------------------------------------------------------------------------

_MASK = np.array([[True] * 6, [True] * 4 + [False] * 2, [True] * 2 + [False] * 4, [True] * 6])


@pytest.mark.harness
def test_harness_batch_condition_with_mask():
    x = _normal(4, 6, 8, scale=2.0, loc=1.0)
    cond = _normal(4, 3)
    testing.check_layer(
        layers.ConditionalLayerNormalization,
        {"condition_initializer": "random_normal"},
        [x, cond],
        mask=_MASK,
    )


@pytest.mark.harness
def test_harness_position_condition_with_mask_and_hidden_units():
    x = _normal(4, 6, 8, scale=2.0, loc=1.0)
    cond = _normal(4, 6, 3)
    testing.check_layer(
        layers.ConditionalLayerNormalization,
        {"condition_initializer": "random_normal", "hidden_units": 5, "hidden_activation": "tanh"},
        [x, cond],
        mask=_MASK,
    )


@pytest.mark.harness
def test_harness_rms_over_two_axes():
    x = _normal(4, 3, 5, 6, scale=2.0)
    cond = _normal(4, 3, 2)
    testing.check_layer(
        layers.ConditionalLayerNormalization,
        {"condition_initializer": "random_normal", "axis": [2, 3], "rms": True},
        [x, cond],
        checks=("call", "dtypes", "serialization", "fit"),
    )


def test_eager_shortcut_check_of_the_backend():
    from keras_tricks import _backend

    x = keras.ops.convert_to_tensor(np.array([[1.0, -3.0]], "float32"))
    assert _backend.exceeds_in_eager(x, 2.0) is True
    assert _backend.exceeds_in_eager(x, 3.0) is False
    assert _backend.exceeds_in_eager(keras.Input((2,)), 2.0) is None


def test_rows_above_the_rescaling_threshold_match_the_reference():
    # Eagerly, inputs above 2^50 take the rescaled path; below, the plain one.
    # Both must agree with the reference (and with each other after scaling).
    x = _normal(2, 3, 16, scale=2.0, loc=1.0)
    cond = _normal(2, 4)
    layer = ConditionalLayerNormalization(epsilon=1e-12)
    layer([x, cond])
    weights = _randomise(layer, seed=5)
    small = testing.to_numpy(layer([x, cond]))
    big = testing.to_numpy(layer([x * np.float32(2.0**60), cond]))
    testing.assert_close(small, reference(x, cond, weights, [-1], 1e-12), "float32", 4.0)
    testing.assert_close(big, small, "float32", 4.0)
