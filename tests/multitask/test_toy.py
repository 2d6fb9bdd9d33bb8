"""The toy problems of the papers with the real strategies.

1. CAGrad / Nash-MTL's two-task toy (tests/multitask/toy.py): Adam driven by
   each strategy's `task_weights` on the Gram matrix of the analytic
   gradients (demos/multitask_toy.py), at a reduced cost (a larger learning
   rate, fewer steps): MGDA ends on the Pareto set from the three starts of the
   CAGrad paper, CAGrad at the optimum of the average loss (0, -8.3551), and
   every trajectory follows the one of the NumPy references.
2. Kendall et al.'s toy (y1 = 2x + 8 + 10 eps, y2 = 3x + 3 + eps, two linear
   heads): MultiTaskModel(strategy="uncertainty") learns sigma ~ (10, 1).
"""

import keras
import numpy as np
import pytest

from demos import multitask_toy as demo
from keras_tricks import multitask, testing
from tests.multitask import toy


@pytest.mark.parametrize("x0", [(-8.5, 7.5), (9.0, 9.0)])  # the third start is easy
def test_mgda_ends_on_the_pareto_set(x0):
    traj = demo.run("mgda", x0, 2000, lr=0.05)
    assert toy.distance_to_pareto(traj[-1]) < 0.01
    ref_end = toy.run_reference("mgda", x0, 2000, lr=0.05)[-1]
    np.testing.assert_allclose(traj[-1], ref_end, atol=0.05)


def test_cagrad_ends_at_the_average_optimum():
    end = demo.run("cagrad", (-8.5, -5.0), 1500, lr=0.03)[-1]
    np.testing.assert_allclose(end, [0.0, toy.pareto_x2(0.0)], atol=3e-3)


@pytest.mark.parametrize("method", ["equal", "pcgrad", "cagrad", "primary_auxiliary"])
def test_trajectory_follows_the_reference(method):
    # 150 steps from the upper-left start, through the region where the two
    # losses conflict (later, in the log valley, float32 rounding is amplified);
    # float32 weights vs float64 reference
    x0 = (-8.5, 7.5)
    traj = demo.run(method, x0, 150, lr=0.01)
    ref_traj = toy.run_reference(method, x0, 150, lr=0.01)
    np.testing.assert_allclose(traj, ref_traj, atol=1e-3)


def test_kendall_uncertainty_recovers_the_noise_levels():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    n = 4096
    x = rng.normal(size=(n, 1)).astype("float32")
    y1 = (2 * x + 8 + 10 * rng.normal(size=(n, 1))).astype("float32")
    y2 = (3 * x + 3 + rng.normal(size=(n, 1))).astype("float32")
    inputs = keras.Input((1,))
    model = keras.Model(
        inputs,
        [keras.layers.Dense(1, name="y1")(inputs), keras.layers.Dense(1, name="y2")(inputs)],
    )
    mt = multitask.MultiTaskModel(model, strategy="uncertainty")
    mt.compile(optimizer=keras.optimizers.Adam(0.2), loss="mse")
    mt.fit(x, {"y1": y1, "y2": y2}, batch_size=128, epochs=30, verbose=0)
    sigmas = testing.to_numpy(mt.strategy.sigmas)
    # sigma_i^2 -> L_i, the noise variances: sigma ~ (10, 1), within 10%
    noise = [np.std(y1 - 2 * x - 8), np.std(y2 - 3 * x - 3)]
    np.testing.assert_allclose(sigmas, noise, rtol=0.1)
    np.testing.assert_allclose(sigmas, [10.0, 1.0], rtol=0.1)
    # the heads themselves: the minimum of the weighted losses is the data's
    w1, b1 = (testing.to_numpy(v) for v in model.get_layer("y1").weights)
    w2, b2 = (testing.to_numpy(v) for v in model.get_layer("y2").weights)
    np.testing.assert_allclose([w2.item(), b2.item()], [3.0, 3.0], atol=0.3)
    np.testing.assert_allclose([w1.item(), b1.item()], [2.0, 8.0], atol=1.0)
