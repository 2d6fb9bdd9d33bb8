import os
import tempfile

import keras
import numpy as np
import pytest

from keras_tricks import callbacks, losses, testing


def _data(seed=0, n=32):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype("float32")
    y = (x @ rng.normal(size=(3, 2))).astype("float32")
    return x, y


def _model(loss, lr=0.1, features=3, outputs=2):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((features,)), keras.layers.Dense(outputs)])
    model.compile(keras.optimizers.SGD(lr), loss=loss)
    return model


@pytest.mark.harness
def test_scheduler_through_harness():
    testing.check_callback(
        lambda: callbacks.FloodLevelScheduler(lambda epoch, level: 0.01 * epoch),
        model_factory=lambda: _model(losses.Flooding("mse", 0.0), lr=0.01, features=4, outputs=1),
    )


def test_level_changes_take_effect_without_recompiling():
    """Full-batch SGD: b = 0 descends in epoch 0, b = 1e6 ascends afterwards;
    logged level and flooded fraction follow the schedule on every backend
    (on JAX the level is training state, not a constant traced into the step)."""
    x, y = _data()
    model = _model(losses.Flooding("mse", 0.0))
    history = model.fit(
        x,
        y,
        batch_size=32,
        epochs=3,
        shuffle=False,
        verbose=0,
        callbacks=[callbacks.FloodLevelScheduler(lambda epoch, level: 0.0 if epoch == 0 else 1e6)],
    )
    h = history.history
    np.testing.assert_allclose(h["flood_level"], [0.0, 1e6, 1e6])
    np.testing.assert_allclose(h["flood_fraction"], [0.0, 1.0, 1.0])
    assert h["loss"][1] < h["loss"][0]  # descended in epoch 0
    assert h["loss"][2] > h["loss"][1]  # ascended in epoch 1
    # flooded objective of a single batch: |L - b| + b
    np.testing.assert_allclose(
        h["flood_objective"], [h["loss"][0], 2e6 - h["loss"][1], 2e6 - h["loss"][2]], rtol=1e-6
    )


def test_logged_statistics_match_numpy_in_evaluate():
    x, y = _data(1, n=48)
    flood = losses.Flooding("mse", 0.0)
    model = _model(flood)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[callbacks.FloodLevelScheduler()])
    pred = np.float64(model.predict(x, verbose=0))
    batch_losses = np.array([np.mean((pred[i : i + 16] - y[i : i + 16]) ** 2) for i in range(0, 48, 16)])
    # Between the two smallest batch losses, not at one of them: a level equal
    # to a batch loss makes `L < b` hinge on float32 vs float64 rounding.
    low = np.sort(batch_losses)
    level = float((low[0] + low[1]) / 2)
    flood.level = level
    logs = model.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    testing.assert_close(logs["loss"], batch_losses.mean(), what="plain loss")
    testing.assert_close(
        logs["flood_objective"], np.mean(np.abs(batch_losses - level) + level), what="flood_objective"
    )
    testing.assert_close(logs["flood_fraction"], np.mean(batch_losses < level), what="flood_fraction")
    testing.assert_close(logs["flood_level"], level, what="flood_level")


def test_individual_flooding_fraction_is_over_samples():
    x, y = _data(2, n=40)
    flood = losses.IndividualFlooding("mse", 0.0)
    model = _model(flood)
    model.fit(x, y, batch_size=20, epochs=1, verbose=0, callbacks=[callbacks.FloodLevelScheduler()])
    pred = np.float64(model.predict(x, verbose=0))
    per = np.mean((pred - y) ** 2, axis=-1)
    flood.level = float(np.quantile(per, 0.3))
    logs = model.evaluate(x, y, batch_size=20, verbose=0, return_dict=True)
    testing.assert_close(logs["flood_fraction"], np.mean(per < flood.level))
    testing.assert_close(logs["flood_objective"], np.mean(np.abs(per - flood.level) + flood.level))
    testing.assert_close(logs["loss"], per.mean())


def test_multi_output_per_output_levels_and_names():
    x, y = _data(3)
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, size=(32,))
    keras.utils.set_random_seed(0)
    inp = keras.Input((3,))
    reg = keras.layers.Dense(2, name="reg")(inp)
    cls = keras.layers.Dense(3, name="cls")(inp)
    model = keras.Model(inp, {"reg": reg, "cls": cls})
    model.compile(
        keras.optimizers.SGD(0.05),
        loss={
            "reg": losses.Flooding("mse", 0.5),
            "cls": losses.IndividualFlooding(
                keras.losses.SparseCategoricalCrossentropy(from_logits=True), 0.2
            ),
        },
    )
    history = model.fit(
        x,
        {"reg": y, "cls": labels},
        batch_size=16,
        epochs=2,
        verbose=0,
        validation_data=(x, {"reg": y, "cls": labels}),
        callbacks=[callbacks.FloodLevelScheduler({"reg": lambda epoch, level: 0.5 + epoch})],
    )
    h = history.history
    np.testing.assert_allclose(h["reg_flood_level"], [0.5, 1.5])
    np.testing.assert_allclose(h["cls_flood_level"], [0.2, 0.2])
    for key in (
        "reg_flood_objective",
        "reg_flood_fraction",
        "cls_flood_objective",
        "cls_flood_fraction",
        "val_reg_flood_level",
        "reg_loss",
        "cls_loss",
        "val_loss",
    ):
        assert key in h, key
    # the per-output losses and val_loss are the plain ones
    pred = model.predict(x, verbose=0)
    z = np.float64(pred["cls"])
    logp = z - np.log(np.sum(np.exp(z), -1, keepdims=True))
    plain = np.mean((np.float64(pred["reg"]) - y) ** 2) - np.mean(logp[np.arange(32), labels])
    testing.assert_close(h["val_loss"][-1], plain, what="val_loss")


def test_level_survives_save_and_load():
    x, y = _data(4)
    model = _model(losses.Flooding("mse", 0.1))
    model.fit(
        x,
        y,
        batch_size=16,
        epochs=2,
        verbose=0,
        callbacks=[callbacks.FloodLevelScheduler(lambda epoch, level: level * 2)],
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "flooded.keras")
        model.save(path)
        loaded = keras.saving.load_model(path)
    assert isinstance(loaded.loss, losses.Flooding)
    assert loaded.loss.level == pytest.approx(0.4)
    assert (
        loaded.evaluate(x, y, verbose=0, return_dict=True)["loss"]
        == model.evaluate(x, y, verbose=0, return_dict=True)["loss"]
    )
    history = loaded.fit(
        x, y, batch_size=16, epochs=1, verbose=0, callbacks=[callbacks.FloodLevelScheduler()]
    )
    np.testing.assert_allclose(history.history["flood_level"], [0.4])


def test_bad_schedules_and_models_are_value_errors():
    x, y = _data(5)
    with pytest.raises(ValueError, match="`schedule`"):
        callbacks.FloodLevelScheduler(schedule=3)
    model = _model(losses.Flooding("mse", 0.1))
    with pytest.raises(ValueError, match="`level`"):
        model.fit(
            x, y, epochs=1, verbose=0, callbacks=[callbacks.FloodLevelScheduler(lambda epoch, level: -1.0)]
        )
    with pytest.raises(ValueError, match="`schedule`"):
        model.fit(
            x, y, epochs=1, verbose=0, callbacks=[callbacks.FloodLevelScheduler({"nope": lambda e, l: l})]
        )
    plain = _model("mse")
    with pytest.raises(ValueError, match="Flooding"):
        plain.fit(x, y, epochs=1, verbose=0, callbacks=[callbacks.FloodLevelScheduler()])


def test_config_round_trip():
    cb = callbacks.FloodLevelScheduler(lambda e, l: l, verbose=1)
    assert callbacks.FloodLevelScheduler.from_config(cb.get_config()).get_config() == cb.get_config()
