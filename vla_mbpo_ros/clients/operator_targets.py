"""An operator device's joint targets, read from a topic of the graph (sensor_msgs/JointState).

Whatever publishes them: the teleop node (gamepad, keyboard, SO-101 leader arm) or the sim's
scripted expert, pointed at this topic instead of the gate's input (the ``lerobot`` bringup profile
does that), so that LeRobot sits between the operator and the gate and records what it forwards.
A target older than ``max_age_s`` is an error, never repeated: a silent device must make the arm
hold (its targets go stale at the gate), not replay its last wish.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sensor_msgs.msg import JointState

from vla_mbpo_ros.clients.session import RosSession
from vla_mbpo_ros.core.robot.joints import reorder
from vla_mbpo_ros.nodes._runtime import SENSOR_QOS

OPERATOR_TOPIC = "/vla_mbpo/operator/joint_targets"


class OperatorTargets:
    def __init__(self, joint_names: Sequence[str], *, node_name: str, topic: str = OPERATOR_TOPIC,
                 max_age_s: float = 0.5, connect_timeout_s: float = 30.0, domain_id: int | None = None) -> None:
        self.joint_names = tuple(joint_names)
        self.node_name = node_name
        self.topic = topic
        self.max_age_s = max_age_s
        self.connect_timeout_s = connect_timeout_s
        self.domain_id = domain_id
        self.session: RosSession | None = None

    @property
    def connected(self) -> bool:
        return self.session is not None and not self.session.closed

    def connect(self) -> None:
        session = self.session = RosSession(self.node_name, self.domain_id)
        try:
            session.keep_latest(JointState, self.topic, SENSOR_QOS)
            session.wait_for_messages([self.topic], self.connect_timeout_s,
                                      ": is an operator device (teleop node, sim expert) publishing there?")
        except BaseException:
            self.close()
            raise

    def targets(self) -> np.ndarray:
        """The newest targets in ``joint_names`` order (radians); TimeoutError when stale."""
        msg = self.session.latest(self.topic, self.max_age_s)
        return reorder(msg.name, msg.position, self.joint_names, self.topic)

    def close(self) -> None:
        session, self.session = self.session, None
        if session is not None:
            session.close()
