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
    # just below +pi the stencil reaches the grid's last column, the same angle as -pi
    corners, weights = optimum.bilinear_corners(np.array([np.pi - 1e-9]), np.array([0.0]))
    assert corners.max() < plane.size
