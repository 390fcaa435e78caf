"""Data: the shared ``Observation``/``Episode`` types, observation sync, LeRobotDataset (v3) recording
and reading, and teleop input mapping. No ROS here: the recorder and teleop nodes are thin glue."""
