"""Shared pieces of the EMA tests: data, model, recorder, float64 reference."""

import keras
import numpy as np

MOMENTUM = 0.9
N, FEATURES, BATCH = 64, 4, 16
STEPS_PER_EPOCH = N // BATCH


def data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, FEATURES)).astype("float32")
    y = (x @ rng.normal(size=(FEATURES, 1)) + 0.5).astype("float32")
    return x, y


def make_model(seed=0, optimizer=None, batchnorm=False, compile=True):
    """A linear model (so that NumPy can predict with the reference EMA)."""
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((FEATURES,))]
    if batchnorm:
        layers.append(keras.layers.BatchNormalization(momentum=0.5))
    layers.append(keras.layers.Dense(1))
    model = keras.Sequential(layers)
    if compile:
        model.compile(optimizer=optimizer or keras.optimizers.Adam(0.05), loss="mse")
    return model


def weights(variables):
    return [np.array(keras.ops.convert_to_numpy(v)) for v in variables]


class Recorder(keras.callbacks.Callback):
    """Records the raw weights after every step (the trajectory the EMA
    averages), and what the model holds at each batch begin and epoch end."""

    def __init__(self, which="trainable"):
        super().__init__()
        self.which = which
        self.trajectory, self.batch_begin, self.epoch_end = [], [], []

    def _variables(self):
        m = self.model
        if self.which == "trainable":
            return m.trainable_variables
        return [v for v in m.non_trainable_variables if "float" in str(v.dtype)]

    def on_train_begin(self, logs=None):
        if not self.trajectory:
            self.trajectory.append(weights(self._variables()))

    def on_train_batch_begin(self, batch, logs=None):
        self.batch_begin.append(weights(self._variables()))

    def on_train_batch_end(self, batch, logs=None):
        self.trajectory.append(weights(self._variables()))

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_end.append(weights(self._variables()))


def numpy_ema(trajectory, momentum, warmup, bias_correction):
    """Float64 EMA after each step of a recorded trajectory [theta_0, ...]."""
    theta0 = [np.asarray(w, np.float64) for w in trajectory[0]]
    avg = [np.zeros_like(w) for w in theta0] if bias_correction else theta0
    debias = 0.0
    out = []
    for t, theta in enumerate(trajectory[1:]):
        m = min(momentum, (1.0 + t) / (10.0 + t)) if warmup else momentum
        avg = [m * a + (1.0 - m) * np.asarray(w, np.float64) for a, w in zip(avg, theta)]
        debias = m * debias + (1.0 - m)
        out.append([a / debias for a in avg] if bias_correction else list(avg))
    return out


def linear_mse(ws, x, y):
    kernel, bias = (np.asarray(w, np.float64) for w in ws[-2:])
    return float(np.mean((x.astype(np.float64) @ kernel + bias - y) ** 2))
