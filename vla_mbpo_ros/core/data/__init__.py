"""Data: the shared ``Observation``/``Episode`` types, observation sync, LeRobotDataset (v3) recording
and reading, and teleop input mapping. No ROS here: the recorder and teleop nodes are thin glue."""

import os
import warnings

# LeRobot writes and reads datasets through the `datasets` library, which draws a progress bar for every
# episode saved, and LeRobot turns them back on after its own quiet sections. The environment variable,
# read once at the library's import, wins; LeRobot's attempts to re-enable them then only warn.
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
warnings.filterwarnings("ignore", message="Cannot enable progress bars", module="datasets")
