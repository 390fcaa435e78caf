"""Simulated SO-101 (robot:=sim): MuJoCo arm + head/wrist cameras behind the real robot's topics.

Publishes /cameras/<view>/image_raw + camera_info and /joint_states like the real drivers, takes
commands on both arm interfaces of the contract (JointTrajectory as ros2_control's
JointTrajectoryController topic, Float64MultiArray as a forward position controller) and clips
them to the joint limits as the hardware does. Ground-truth success is published for evaluation
and labelling in sim only. Stamps are sim time on the node clock's epoch at start, so with
realtime_factor 1 they track wall time.
"""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Bool, Float64MultiArray
from trajectory_msgs.msg import JointTrajectory

from vla_mbpo_ros.conversions import numpy_to_image, seconds_to_stamp, stamp_to_seconds
from vla_mbpo_ros.core.sim import RealtimePacer, SimConfig, So101Sim
from vla_mbpo_ros.core.trajectory import Trajectory, joint_order
from vla_mbpo_ros.nodes._runtime import (
    LATCHED_QOS,
    RELIABLE_QOS,
    SENSOR_QOS,
    ConfigError,
    declare,
    publishing_until_shutdown,
    run_node,
)
from vla_mbpo_ros.srv import ResetSim


def _declare_sim_config(node: Node) -> SimConfig:
    """Every SimConfig field is a ROS parameter ``sim.<field>`` (defaults from the dataclass)."""
    values = {}
    for f in dataclasses.fields(SimConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        default = list(default) if isinstance(default, tuple) else default
        values[f.name] = declare(node, f"sim.{f.name}", default)
    try:
        return SimConfig.from_dict(values)
    except ValueError as err:
        raise ConfigError(f"sim.{err}") from err


class SimRobotNode(Node):
    def __init__(self) -> None:
        super().__init__("sim_robot")
        self.config = _declare_sim_config(self)
        trajectory_topic = declare(self, "trajectory_topic", "/arm_controller/joint_trajectory")
        position_topic = declare(self, "position_topic", "/forward_position_controller/commands")
        self.sim = So101Sim(self.config)
        self.sim.reset(self.config.seed)
        self.resets = 0
        self.pacer = RealtimePacer(self.config.realtime_factor)
        self._epoch = stamp_to_seconds(self.get_clock().now().to_msg())
        self._lock = threading.Lock()  # sim state is touched by the physics thread and callbacks
        self._trajectory: Trajectory | None = None

        self.joint_pub = self.create_publisher(JointState, "/joint_states", SENSOR_QOS)
        self.success_pub = self.create_publisher(Bool, "/sim/success", LATCHED_QOS)
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
            start = stamp_to_seconds(msg.header.stamp) - self._epoch if msg.header.stamp.sec or msg.header.stamp.nanosec else self.sim.time
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
            self.sim.reset(seed)
            self._trajectory = None
            self.pacer.reset(self.sim.time)
        response.success, response.seed, response.message = True, seed, f"reset with seed {seed}"
        return response

    # ------------------------------------------------------------------ physics thread
    def _physics_loop(self) -> None:
        names = list(self.sim.joint_names)
        while not self._stop.is_set() and self.context.ok():
            with self._lock:
                if self._trajectory is not None:
                    self.sim.set_joint_targets(self._trajectory.target(self.sim.time))
                self.sim.step()
                sim_time = self.sim.time
                stamp = seconds_to_stamp(self._epoch + sim_time)
                state = JointState(name=names, position=self.sim.joint_positions().tolist(), velocity=self.sim.joint_velocities().tolist())
                frames = self.sim.render() if self.sim.camera_frame_due() else None
                frame_stamp = seconds_to_stamp(self._epoch + self.sim.frame_time)
                success = self.sim.is_success()
            state.header.stamp = stamp
            with publishing_until_shutdown(self):
                self.joint_pub.publish(state)
                if frames is not None:
                    for view, rgb in frames.items():
                        self.image_pubs[view].publish(numpy_to_image(rgb, "rgb8", frame_stamp, f"{view}_camera_optical_frame"))
                        self.info_pubs[view].publish(self._camera_info(view, frame_stamp))
                if success != self._success:
                    self._success = success
                    self.success_pub.publish(Bool(data=success))
            self.pacer.wait(sim_time)

    def _camera_info(self, view: str, stamp) -> CameraInfo:
        k = self.sim.camera_info(view)
        info = CameraInfo()
        info.header.stamp = stamp
        info.header.frame_id = f"{view}_camera_optical_frame"
        info.width, info.height = k.width, k.height
        info.k = k.matrix.reshape(-1).tolist()
        info.p = [k.fx, 0.0, k.cx, 0.0, 0.0, k.fy, k.cy, 0.0, 0.0, 0.0, 1.0, 0.0]
        info.distortion_model = "plumb_bob"
        info.d = [0.0] * 5
        return info

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)
        self.sim.close()


def main() -> int:
    return run_node(SimRobotNode)


if __name__ == "__main__":
    raise SystemExit(main())
