"""LeRobot feature dicts from the plugin config, action vectors, and the declared LeRobot range."""

from __future__ import annotations

import importlib.metadata

import numpy as np
import pytest
from packaging.requirements import Requirement

from vla_mbpo_ros.core.robot.lerobot_features import (
    CameraStream, check_joint_names, joint_dict, joint_features, joint_vector, observation_features,
)
from vla_mbpo_ros.core.util.requirements import declared_requirement, require_declared_version, version_problem

JOINTS = ("shoulder_pan", "gripper")


def test_features_come_from_the_joint_names_and_cameras():
    cameras = [CameraStream("head", "/cameras/head/image_raw", 48, 64, 10),
               CameraStream("wrist", "/cameras/wrist/image_raw/compressed", 96, 96, 30, "compressed")]
    assert joint_features(JOINTS) == {"shoulder_pan.pos": float, "gripper.pos": float}
    assert observation_features(JOINTS, cameras) == {"shoulder_pan.pos": float, "gripper.pos": float,
                                                     "head": (48, 64, 3), "wrist": (96, 96, 3)}


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"transport": "jpeg"}, r"cameras.head.transport: expected one of \['raw', 'compressed'\], got 'jpeg'"),
    ({"height": 0}, "cameras.head.height: expected an integer > 0, got 0"),
    ({"fps": 7.5}, "cameras.head.fps: expected an integer > 0, got 7.5"),
    ({"topic": "cameras/head"}, "cameras.head.topic: expected an absolute ROS topic name"),
])
def test_a_bad_camera_is_refused_naming_the_field(kwargs, message):
    fields = {"name": "head", "topic": "/cameras/head/image_raw", "height": 96, "width": 96, "fps": 10, **kwargs}
    with pytest.raises(ValueError, match=message):
        CameraStream(**fields)


def test_joint_names_must_be_a_list_without_repeats():
    with pytest.raises(ValueError, match="repeat"):
        check_joint_names(["a", "a"])
    with pytest.raises(ValueError, match="non-empty"):
        check_joint_names([])


def test_an_action_is_put_in_joint_order_and_a_foreign_one_is_refused_whole():
    assert joint_vector({"gripper.pos": 0.5, "shoulder_pan.pos": np.float32(-1.0)}, JOINTS).tolist() == [-1.0, 0.5]
    assert joint_dict([0.1, 0.2], JOINTS) == {"shoulder_pan.pos": 0.1, "gripper.pos": 0.2}
    with pytest.raises(ValueError, match=r"missing keys \['gripper.pos'\], unknown keys \['elbow.pos'\]"):
        joint_vector({"shoulder_pan.pos": 0.0, "elbow.pos": 0.0}, JOINTS)
    # Non-finite values are the gate's to hold, not silently dropped here.
    assert np.isnan(joint_vector({"shoulder_pan.pos": float("nan"), "gripper.pos": 0.0}, JOINTS)[0])


def test_a_lerobot_outside_the_declared_range_is_refused_naming_both_versions():
    requirement = Requirement("lerobot>=0.6.0,<0.7")
    assert version_problem(requirement, "0.6.1", "plugin") == ""
    assert version_problem(requirement, "0.6.2.dev0", "plugin") == ""
    assert version_problem(requirement, "0.7.0", "plugin") == (
        "plugin supports lerobot<0.7,>=0.6.0 but lerobot 0.7.0 is installed: install a supported lerobot, "
        "or a plugin made for 0.7.0")
    assert "0.5.3 is installed" in version_problem(requirement, "0.5.3", "plugin")
    assert version_problem(requirement, None, "plugin") == "plugin needs lerobot<0.7,>=0.6.0, which is not installed"


@pytest.mark.parametrize("distribution", ["lerobot_robot_vla_mbpo_ros", "lerobot_teleoperator_vla_mbpo_ros"])
def test_the_plugins_declare_their_lerobot_range_and_the_installed_one_is_in_it(distribution):
    try:
        requirement = declared_requirement(distribution, "lerobot")
    except importlib.metadata.PackageNotFoundError:
        pytest.fail(f"{distribution} is not installed: `make setup` installs it (plugins/{distribution})")
    assert str(requirement.specifier) == "<0.7,>=0.6.0"
    assert require_declared_version(distribution, "lerobot") == importlib.metadata.version("lerobot")
