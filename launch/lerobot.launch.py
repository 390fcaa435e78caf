"""ros2 launch vla_mbpo_ros lerobot.launch.py [robot:=sim|so101|ros2_control] [config:=extra.yaml] [output_dir:=...]

The nodes come from the bringup description (vla_mbpo_ros/bringup), shared with the pip-only runner.
"""

from vla_mbpo_ros.bringup.ros_launch import generate_profile_launch


def generate_launch_description():
    return generate_profile_launch("lerobot")
