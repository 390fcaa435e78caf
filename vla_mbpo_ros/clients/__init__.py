"""ROS clients of this package's graph for code that runs inside another program's process.

The LeRobot plugins (plugins/) drive the arm through these: ``GatedArm`` (camera and joint-state
streams in, operator targets out to the safety gate's input, executor episodes) and
``OperatorTargets`` (an operator device's joint targets read from a topic). Each holds its rclpy
state in a ``RosSession``: a Context of its own, no signal handlers, shut down only by its close().
"""
