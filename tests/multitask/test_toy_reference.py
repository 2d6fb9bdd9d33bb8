"""Self-tests of the NumPy toy problem (tests/multitask/toy.py) and of the
papers' claims on it, reproduced with the NumPy reference strategies at a
reduced cost. The full-length numbers (CAGrad: 100k Adam steps at lr 1e-3;
Nash-MTL: 35k steps, L1 scaled by 0.1) come from `python -m tests.multitask.toy`
and are recorded in tests/multitask/toy_reference_numbers.txt."""

import numpy as np
import pytest

from tests.multitask import toy


def test_gradients_match_finite_differences():
    rng = np.random.default_rng(0)
    h = 1e-6
    for _ in range(300):
        x = rng.uniform(-10, 10, size=2)
        if abs(x[1]) < 1e-3:  # the clamps switch at x2 = 0
            continue
        for scale in (1.0, 0.1):
            fd = np.stack(
                [(toy.losses(x + e, scale) - toy.losses(x - e, scale)) / (2 * h) for e in np.eye(2) * h],
                axis=1,
            )
            g = toy.gradients(x, scale)
            np.testing.assert_allclose(g, fd, atol=1e-6 * (1 + np.abs(g).max()))


def test_values_at_known_points():
    # lower half-plane: only the quadratic parts, times tanh(-x2 / 2)
    x = np.array([0.0, -8.0])
    np.testing.assert_allclose(toy.losses(x), (4.9 - 20) * np.tanh(4.0) * np.ones(2))
    np.testing.assert_allclose(toy.losses(x, scale=0.1)[0], 0.1 * (4.9 - 20) * np.tanh(4.0))
    # upper half-plane: only the log parts, times tanh(x2 / 2)
    x = np.array([1.0, 2.0])
    u1 = 0.5 * (-1 - 7) - np.tanh(-2.0)
    u2 = 0.5 * (-1 + 3) + np.tanh(-2.0) + 2
    np.testing.assert_allclose(toy.losses(x), (np.log(np.abs([u1, u2])) + 6) * np.tanh(1.0))


def test_pareto_set_is_stationary():
    assert toy.pareto_x2(0.0) == pytest.approx(toy.PARETO_X2_AT_0, abs=1e-4)
    for x1 in np.linspace(-6.9, 6.9, 15):
        x = np.array([x1, toy.pareto_x2(x1)])
        g = toy.gradients(x)
        lam = (x1 + 7) / 14  # the convex combination that vanishes
        np.testing.assert_allclose(lam * g[0] + (1 - lam) * g[1], 0, atol=1e-10)
        assert g[0] @ g[1] < 0
    # scaling a loss leaves the set unchanged: still a vanishing combination
    x = np.array([2.0, toy.pareto_x2(2.0)])
    g = toy.gradients(x, scale=0.1)
    assert abs(g[0, 0] * g[1, 1] - g[0, 1] * g[1, 0]) < 1e-12
    assert toy.distance_to_pareto([3.0, toy.pareto_x2(3.0)]) < 1e-6
    assert toy.distance_to_pareto([10.0, toy.pareto_x2(7.0)]) == pytest.approx(3.0, abs=1e-6)


def test_adam_matches_pytorch_formula_on_a_quadratic():
    # two steps by hand: m1 = 0.1 g, v1 = 0.001 g^2 -> step lr * sign(g) (up to eps)
    traj = toy.adam_run(lambda x: 2 * x, [1.0, -2.0], 1, lr=0.1)
    np.testing.assert_allclose(traj[1], [0.9, -1.9], atol=1e-7)


@pytest.mark.parametrize("x0", toy.CAGRAD_STARTS)
def test_mgda_reaches_the_pareto_set(x0):
    # reduced: lr 0.05 for 2000 steps (full setting: 100k at 1e-3, same conclusion)
    end = toy.run_reference("mgda", x0, 2000, lr=0.05)[-1]
    assert toy.distance_to_pareto(end) < 0.01


def test_cagrad_reaches_the_average_optimum():
    # from the lower start; the full run ends at (0, -8.3551) from all three starts
    # (reduced: lr 0.01 for 5000 steps)
    end = toy.run_reference("cagrad", (-8.5, -5.0), 5000, lr=0.01)[-1]
    np.testing.assert_allclose(end, [0.0, toy.pareto_x2(0.0)], atol=1e-3)
    # equal weighting from there ends at the same point (the average optimum)
    end = toy.run_reference("equal", (-8.5, -5.0), 5000, lr=0.01)[-1]
    np.testing.assert_allclose(end, [0.0, toy.pareto_x2(0.0)], atol=1e-3)


@pytest.mark.parametrize("x0", [(-8.5, 7.5), (9.0, 9.0)])
def test_equal_weighting_gets_stuck(x0):
    # at the papers' lr 1e-3, the average gradient stays in the upper half-plane
    # (the full 100k-step run ends at distance ~10.5 from the Pareto set)
    traj = toy.run_reference("equal", x0, 12_000)
    assert np.all(traj[4000:, 1] > 2.0)
    assert toy.distance_to_pareto(traj[-1]) > 10.0
    # while MGDA from the same start is already well below x2 = 0 at that point
    assert toy.run_reference("mgda", x0, 12_000)[-1, 1] < -2.0
