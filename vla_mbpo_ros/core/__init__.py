"""The ROS-free core of vla_mbpo_ros: control, robot, data, policy, rl, loop, sim, world_model, util."""

import os

# Read once, when huggingface_hub is first imported (by LeRobot, transformers or datasets): loading or
# saving a model of a few MB draws no per-shard progress bars in node logs and bench output.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
