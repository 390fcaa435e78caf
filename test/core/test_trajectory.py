import numpy as np
import pytest

from vla_mbpo_ros.core.robot.joints import joint_order
from vla_mbpo_ros.core.robot.trajectory import Trajectory

NAMES = ("a", "b")


def test_joint_order_maps_message_order_and_names_missing_joints():
    np.testing.assert_array_equal(joint_order(["b", "x", "a"], NAMES), [2, 0])
    with pytest.raises(ValueError, match=r"missing \['b'\]"):
        joint_order(["a"], NAMES)


def test_interpolates_from_current_state_through_points_then_holds_last():
    traj = Trajectory.build(["b", "a"], NAMES, [1.0, 2.0], [[10.0, 1.0], [20.0, 3.0]], start_time=5.0, current=np.zeros(2))
    np.testing.assert_allclose(traj.target(4.0), [0.0, 0.0])  # before start: hold the state at receipt
    np.testing.assert_allclose(traj.target(5.5), [0.5, 5.0])  # halfway to the first point
    np.testing.assert_allclose(traj.target(6.0), [1.0, 10.0])
    np.testing.assert_allclose(traj.target(6.5), [2.0, 15.0])
    np.testing.assert_allclose(traj.target(99.0), [3.0, 20.0])  # after the end: hold the last point


@pytest.mark.parametrize(
    "times,positions,match",
    [
        ([], [], "no points"),
        ([1.0, 1.0], [[0, 0], [1, 1]], "strictly increasing"),
        ([1.0], [[0.0]], "needs 2 positions"),
        ([1.0], [[np.nan, 0.0]], "finite"),
    ],
)
def test_rejects_malformed_trajectories(times, positions, match):
    with pytest.raises(ValueError, match=match):
        Trajectory.build(NAMES, NAMES, times, positions, 0.0, np.zeros(2))
