"""vla_mbpo_ros: world-model-based RL finetuning of VLA policies on ROS 2 robot arms."""

# The generated interface modules (vla_mbpo_ros.msg / .srv) are installed by colcon next to an
# installed copy of this package. When running from the source tree, also look in that copy.
__path__ = __import__("pkgutil").extend_path(__path__, __name__)
