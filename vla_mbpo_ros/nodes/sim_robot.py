"""Simulated SO-101 (robot:=sim): MuJoCo arm + head/wrist cameras behind the real robot's topics.

Publishes /cameras/<view>/image_raw + camera_info and /joint_states like the real drivers, takes
commands on both arm interfaces of the contract (JointTrajectory as ros2_control's
JointTrajectoryController topic, Float64MultiArray as a forward position controller) and clips
them to the joint limits as the hardware does. Ground-truth success is published for evaluation
and labelling in sim only. Stamps are the simulated time elapsed since the physics loop started
(summed over resets, so they never go backwards) on the node clock at that start, and pacing runs
on the same elapsed time, so with realtime_factor 1 they track wall time.

With ``expert_teleop`` true, the scripted pick-cube expert (privileged sim state) publishes its
joint targets every control step on the teleop topic as a sensor_msgs/JointState, like a human
operator's device: they reach the arm only through the policy executor's gate. The expert
restarts at every /sim/reset.
"""

from __future__ import annotations

import threading

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Bool, Float64MultiArray
from trajectory_msgs.msg import JointTrajectory

from vla_mbpo_ros.conversions import numpy_to_image, pinhole_camera_info, seconds_to_stamp, stamp_to_seconds
from vla_mbpo_ros.core.robot.trajectory import Trajectory
from vla_mbpo_ros.core.sim import ExpertConfig, RealtimePacer, ScriptedExpert, SimConfig, So101Sim
from vla_mbpo_ros.core.sim.expert import within_safety_limits
from vla_mbpo_ros.nodes._runtime import (
    LATCHED_QOS,
    RELIABLE_QOS,
    SENSOR_QOS,
    ConfigError,
    declare,
    declare_config,
    publishing_until_shutdown,
    run_node,
)
from vla_mbpo_ros.srv import ResetSim


def _safety_config(robot_yaml: str, joint_names: tuple[str, ...]):
    """The robot's safety config (its joints must be the sim's, in the sim's order)."""
    from vla_mbpo_ros.bringup import config_dir
    from vla_mbpo_ros.core.control.limits import load_safety_config

    try:
        safety = load_safety_config(robot_yaml or config_dir() / "robots" / "so101.yaml")
    except (ValueError, OSError) as err:
        raise ConfigError(f"robot_config: {err}") from err
    if safety.limits.names != tuple(joint_names):
        raise ConfigError(f"robot_config: joints {list(safety.limits.names)} are not the sim's {list(joint_names)}")
    return safety


_MAX_STAMP_LAG_S = 0.1  # the sim's stamps never trail the ROS clock by more than this


class SimRobotNode(Node):
    def __init__(self) -> None:
        super().__init__("sim_robot")
        self.config = declare_config(self, SimConfig, "sim")
        trajectory_topic = declare(self, "trajectory_topic", "/arm_controller/joint_trajectory")
        position_topic = declare(self, "position_topic", "/forward_position_controller/commands")
        expert_teleop = declare(self, "expert_teleop", False, "publish the scripted expert's targets as teleop commands")
        teleop_topic = declare(self, "teleop_topic", "/vla_mbpo/teleop/joint_command", "where expert_teleop publishes")
        expert_config = declare_config(self, ExpertConfig, "expert")
        self.sim = So101Sim(self.config)
        self.sim.reset(self.config.seed)
        self.expert = None
        if expert_teleop:
            # The expert is an operator's device: its targets stay within what the gate lets through,
            # instead of having the gate clamp them (and the grasp slip).
            robot_yaml = declare(self, "robot_config", "", "robot yaml whose safety limits the expert stays within ('' = so101)")
            expert_config = within_safety_limits(expert_config, _safety_config(robot_yaml, self.sim.joint_names),
                                                 self.sim.control_period)
            self.expert = ScriptedExpert(self.sim, expert_config, seed=self.config.seed)
        self.resets = 0
        self.pacer = RealtimePacer(self.config.realtime_factor)
        self._epoch = stamp_to_seconds(self.get_clock().now().to_msg())  # node clock at elapsed time 0
        self._time_base = 0.0  # sim seconds simulated before the last reset (sim.time restarts at 0)
        self._lock = threading.Lock()  # sim state is touched by the physics thread and callbacks
        self._trajectory: Trajectory | None = None

        self.joint_pub = self.create_publisher(JointState, "/joint_states", SENSOR_QOS)
        self.success_pub = self.create_publisher(Bool, "/sim/success", LATCHED_QOS)
        self.teleop_pub = self.create_publisher(JointState, teleop_topic, RELIABLE_QOS) if self.expert else None
        self.image_pubs = {v: self.create_publisher(Image, f"/cameras/{v}/image_raw", SENSOR_QOS) for v in self.config.views}
        self.info_pubs = {v: self.create_publisher(CameraInfo, f"/cameras/{v}/camera_info", SENSOR_QOS) for v in self.config.views}
        self.create_subscription(JointTrajectory, trajectory_topic, self._on_trajectory, RELIABLE_QOS)
        self.create_subscription(Float64MultiArray, position_topic, self._on_positions, RELIABLE_QOS)
        self.create_service(ResetSim, "/sim/reset", self._on_reset)
        self._success = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._physics_loop, name="physics", daemon=True)
        self._thread.start()
        self.get_logger().info(
            f"sim SO-101: views {list(self.config.views)} {self.config.image_size}, control {self.config.control_fps} Hz, "
            f"camera {self.config.camera_fps} Hz, realtime factor {self.config.realtime_factor}"
        )

    # ------------------------------------------------------------------ commands
    def _on_trajectory(self, msg: JointTrajectory) -> None:
        with self._lock:
            stamped = msg.header.stamp.sec or msg.header.stamp.nanosec
            start = stamp_to_seconds(msg.header.stamp) - self._epoch - self._time_base if stamped else self.sim.time
            try:
                self._trajectory = Trajectory.build(
                    msg.joint_names,
                    self.sim.joint_names,
                    [p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in msg.points],
                    [p.positions for p in msg.points],
                    start_time=start,
                    current=self.sim.joint_targets(),
                )
            except ValueError as err:
                self.get_logger().error(f"rejected JointTrajectory: {err}", throttle_duration_sec=2.0)

    def _on_positions(self, msg: Float64MultiArray) -> None:
        q = np.asarray(msg.data, dtype=float)
        with self._lock:
            try:
                self._trajectory = None
                self.sim.set_joint_targets(q)
            except ValueError as err:
                self.get_logger().error(f"rejected position command: {err}", throttle_duration_sec=2.0)

    def _on_reset(self, request: ResetSim.Request, response: ResetSim.Response) -> ResetSim.Response:
        with self._lock:
            self.resets += 1
            seed = int(request.seed) if request.seed >= 0 else self.config.seed + self.resets
            # Elapsed time (stamps, pacing) continues across the reset: no re-anchoring, so nothing
            # the physics thread read before the reset can make it sleep for the old sim time.
            self._time_base += self.sim.time
            self.sim.reset(seed)
            if self.expert is not None:
                self.expert.reset(seed)
            self._trajectory = None
        response.success, response.seed, response.message = True, seed, f"reset with seed {seed}"
        return response

    # ------------------------------------------------------------------ physics thread
    def _physics_loop(self) -> None:
        names = list(self.sim.joint_names)
        with self._lock:  # anchor stamps and pacing together: start-up work before this is no offset
            self.pacer.reset(self._time_base + self.sim.time)
            self._epoch = stamp_to_seconds(self.get_clock().now().to_msg()) - self._time_base - self.sim.time
        while not self._stop.is_set() and self.context.ok():
            with self._lock:
                # A reset's first frame is of the reset instant (sim time 0), so frames stay on the camera's
                # grid; rendered here, on the thread that owns the GL context, before the step.
                frames = self.sim.render() if self.sim.camera_frame_due() else None
                if self._trajectory is not None:
                    # Like a JointTrajectoryController sampling at its next update: the target for
                    # the end of the coming step. Sampling at the step's start would return the
                    # state at receipt whenever a new trajectory arrived since the last step.
                    self.sim.set_joint_targets(self._trajectory.target(self.sim.time + self.sim.control_period))
                expert = self._expert_command(names) if self.expert is not None else None
                self.sim.step()
                elapsed = self._time_base + self.sim.time
                if (lag := self.pacer.behind(elapsed)) > _MAX_STAMP_LAG_S:
                    # Behind real time (a loaded machine): stamps jump to now, as a real camera's capture
                    # stamps would, so consumers that judge data by its age see fresh data, not a drift.
                    self._epoch += lag
                    self.pacer.reset(elapsed)
                stamp = seconds_to_stamp(self._epoch + elapsed)
                state = JointState(name=names, position=self.sim.joint_positions().tolist(), velocity=self.sim.joint_velocities().tolist())
                if frames is None and self.sim.camera_frame_due():
                    frames = self.sim.render()
                frame_stamp = seconds_to_stamp(self._epoch + self._time_base + self.sim.frame_time)
                success = self.sim.is_success()
            state.header.stamp = stamp
            with publishing_until_shutdown(self):
                self.joint_pub.publish(state)
                if expert is not None:
                    self.teleop_pub.publish(expert)
                if frames is not None:
                    for view, rgb in frames.items():
                        self.image_pubs[view].publish(numpy_to_image(rgb, "rgb8", frame_stamp, f"{view}_camera_optical_frame"))
                        self.info_pubs[view].publish(self._camera_info(view, frame_stamp))
                if success != self._success:
                    self._success = success
                    self.success_pub.publish(Bool(data=success))
            self.pacer.wait(elapsed)

    def _expert_command(self, names: list[str]) -> JointState:
        """The expert's targets for the coming control period (called with the sim lock held)."""
        target = self.expert.act(self.sim)
        command = JointState(name=names, position=target.tolist())
        command.header.stamp = seconds_to_stamp(self._epoch + self._time_base + self.sim.time)
        return command

    def _camera_info(self, view: str, stamp) -> CameraInfo:
        k = self.sim.camera_info(view)
        return pinhole_camera_info(k.width, k.height, k.fx, k.fy, k.cx, k.cy, stamp, f"{view}_camera_optical_frame")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)
        self.sim.close()


def main() -> int:
    return run_node(SimRobotNode)


if __name__ == "__main__":
    raise SystemExit(main())
