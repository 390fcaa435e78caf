"""LeRobot robot ``vla_mbpo_ros``: an arm running the vla_mbpo_ros graph, driven through its safety gate.

    lerobot-record --robot.type=vla_mbpo_ros --teleop.type=vla_mbpo_ros ...

LeRobot imports this package at the start of every CLI (``register_third_party_plugins``); that
registers ``GatedRosArmConfig`` under the type ``vla_mbpo_ros``. The import refuses, naming both
versions, a LeRobot outside the range this distribution declares, and needs the vla_mbpo_ros
package on the path (its ROS 2 environment sourced: ``. scripts/env.sh`` in a checkout).
"""

DISTRIBUTION = "lerobot_robot_vla_mbpo_ros"

try:
    from vla_mbpo_ros.core.util.requirements import require_declared_version
except ImportError as err:
    raise ImportError(
        f"{DISTRIBUTION} needs the vla_mbpo_ros package: source its environment first (`. scripts/env.sh` in a "
        f"vla_mbpo_ros checkout, or install/setup.bash of its colcon workspace) ({err})"
    ) from err

LEROBOT_VERSION = require_declared_version(DISTRIBUTION, "lerobot")

from .config_gated_ros_arm import GatedRosArmConfig, RosCameraConfig  # noqa: E402
from .gated_ros_arm import GatedRosArm  # noqa: E402

__all__ = ["GatedRosArm", "GatedRosArmConfig", "RosCameraConfig"]
