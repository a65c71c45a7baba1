"""The optimum's model must be Pendulum-v1's own: the yardstick is only as good as its dynamics."""
import gymnasium as gym
import numpy as np

from mpcd_client import optimum


def test_the_models_step_and_cost_are_gymnasiums():
    env = gym.make("Pendulum-v1")
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(200):
        th, thdot = rng.uniform(-3 * np.pi, 3 * np.pi), rng.uniform(-8, 8)
        u = np.float32(rng.uniform(-2, 2))
        env.unwrapped.state = np.array([th, thdot])
        _, reward, _, _, _ = env.step(np.array([u]))
        cost, new_th, new_thdot = optimum.step_model(th, thdot, float(u))
        true_th, true_thdot = env.unwrapped.state
        assert abs(cost + reward) < 1e-9
        assert abs(new_thdot - true_thdot) < 1e-6  # the environment multiplies its float32 torque in float32
        # the model wraps the angle onto the grid; the environment does not
        assert abs(optimum.angle_normalize(true_th) - new_th) < 1e-6


def test_bilinear_interpolation_is_exact_on_a_plane_and_periodic_in_angle():
    plane = 2.0 * optimum.ANGLES[:, None] - 0.5 * optimum.SPEEDS[None, :]
    th, thdot = np.array([0.3, -1.7]), np.array([2.25, -7.9])
    corners, weights = optimum.bilinear_corners(th, thdot)
    assert np.allclose(optimum.interpolate(plane, corners, weights), 2.0 * th - 0.5 * thdot)
    # A table periodic in angle (its first and last columns the same angle, -pi and +pi): the
    # interpolant must agree on both sides of the seam and follow the function across the last cell.
    periodic = np.cos(optimum.ANGLES)[:, None] + 0.0 * optimum.SPEEDS[None, :]
    for th in [np.pi - 1e-9, -np.pi, np.pi - optimum.ANGLE_STEP / 2, -np.pi + optimum.ANGLE_STEP / 3]:
        corners, weights = optimum.bilinear_corners(np.array([th]), np.array([0.0]))
        assert abs(optimum.interpolate(periodic, corners, weights)[0] - np.cos(th)) < optimum.ANGLE_STEP**2


def test_the_model_is_periodic_in_angle():
    for th in [-3.0, -np.pi, 0.5, np.pi - 1e-6]:
        for thdot in [-8.0, -1.0, 0.0, 6.5]:
            for u in [-2.0, 0.3, 2.0]:
                once, shifted = optimum.step_model(th, thdot, u), optimum.step_model(th + 2 * np.pi, thdot, u)
                assert np.allclose(once, shifted, atol=1e-9)
