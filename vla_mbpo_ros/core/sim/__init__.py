"""Simulated SO-101 arm (``robot:=sim``): MuJoCo scene, real-time pacing and a scripted expert."""

from vla_mbpo_ros.core.sim.config import SimConfig
from vla_mbpo_ros.core.sim.env import CameraIntrinsics, So101Sim
from vla_mbpo_ros.core.sim.expert import ExpertConfig, Phase, ScriptedExpert
from vla_mbpo_ros.core.sim.pacer import RealtimePacer

__all__ = [
    "CameraIntrinsics",
    "ExpertConfig",
    "Phase",
    "RealtimePacer",
    "ScriptedExpert",
    "SimConfig",
    "So101Sim",
]
