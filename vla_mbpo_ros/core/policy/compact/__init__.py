"""The built-in compact flow-matching VLA (CPU default): ``configuration`` and ``modeling``, as in LeRobot."""

from vla_mbpo_ros.core.policy.compact.configuration import CompactFlowVLAConfig
from vla_mbpo_ros.core.policy.compact.modeling import CompactFlowVLA

__all__ = ["CompactFlowVLA", "CompactFlowVLAConfig"]
