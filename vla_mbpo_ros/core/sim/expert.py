"""Scripted pick-cube expert for the simulated SO-101, for demonstrations and RL data.

It reads the true cube pose from the simulator (privileged) and outputs joint-position targets,
exactly what a policy or teleoperator sends: ready pose (joint space) -> above the cube ->
descend -> close the jaws -> lift. Cartesian waypoints go through a damped-least-squares IK on
the MuJoCo Jacobian of the point between the fingertips, with the jaws pointing straight down
and their opening across two faces of the cube.

Noise options make imperfect rollouts: Gaussian noise on every target, and a window of random
joint motion covering a fraction of the episode, after which the expert starts over.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from dataclasses import dataclass

import mujoco
import numpy as np

from vla_mbpo_ros.core.sim.env import So101Sim

_GRIPPER_JOINT = "gripper"
_JAW_PAD_GEOMS = ("fixed_jaw_pad", "moving_jaw_pad")
# Axes of the gripper frame site: x runs out along the jaws, z from the fixed to the moving jaw.
_APPROACH_AXIS = 0
_JAW_AXIS = 2
_DOWN = np.array([0.0, 0.0, -1.0])
_N_ARM = 5  # joints before the gripper in SO101_JOINT_NAMES


class Phase(enum.Enum):
    READY = "ready"
    APPROACH = "approach"
    DESCEND = "descend"
    CLOSE = "close"
    LIFT = "lift"
    HOLD = "hold"
    RANDOM = "random"


@dataclass
class ExpertConfig:
    """Expert parameters. Heights are of the point between the fingertips above the cube centre."""

    # Ready pose: the arm above the workspace with the jaws down, solved by IK at construction
    # from this seed (SO101_JOINT_NAMES order, arm joints only) and for this point.
    ready_seed: tuple[float, ...] = (0.0, 0.0, 0.5, 1.0, 1.5708)
    ready_point: tuple[float, float, float] = (0.2, 0.0, 0.12)
    ready_joint_speed: float = 2.5  # rad/s, joint-space interpolation to the ready pose
    ready_tolerance: float = 0.05  # rad, largest joint error at which the ready pose counts as reached
    hover_height: float = 0.05
    grasp_height: float = 0.012
    lift_height: float = 0.14  # above the cube's resting centre height
    approach_speed: float = 0.25  # m/s of the Cartesian waypoint
    descend_speed: float = 0.08
    lift_speed: float = 0.10
    position_tolerance: float = 0.006  # m, phase goal reached
    phase_timeout: float = 3.0  # s in a moving phase before giving up and moving on
    close_duration: float = 0.6  # s with the jaws closing before lifting
    gripper_open: float = 1.2  # rad; the cube is as wide as the jaws at 0.46 rad
    gripper_closed: float = -0.17  # rad; the servo's force limit sets the squeeze
    grasp_jaw_angle: float = 0.46  # rad, defines the point between the fingertips
    ik_damping: float = 0.02
    ik_iterations: int = 12
    ik_tolerance: float = 1e-4
    orientation_weight: float = 0.05  # metres of position error per radian of orientation error
    gravity_compensation: bool = True  # offset targets by gravity torque / servo gain
    # Imperfect rollouts.
    target_noise_std: float = 0.0  # rad, Gaussian noise on every output target
    random_fraction: float = 0.0  # fraction of episode_steps spent in random joint motion
    random_step_std: float = 0.05  # rad per control step of the random walk
    episode_steps: int = 300  # control steps an episode is expected to last (random window)
    # What the arm's safety gate allows, when the expert drives it through the gate like an operator's
    # device (see ``within_safety_limits``): output targets stay inside these bounds and change by at
    # most ``max_target_step`` per control step, so the gate never has to clamp them. Empty: the
    # joint ranges, and no rate limit (offline demonstrations straight into the sim).
    target_lower: tuple[float, ...] = ()
    target_upper: tuple[float, ...] = ()
    max_target_step: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        positive = ("ready_joint_speed", "ready_tolerance", "approach_speed", "descend_speed", "lift_speed",
                    "position_tolerance", "phase_timeout", "close_duration", "ik_damping",
                    "ik_tolerance", "orientation_weight", "hover_height", "lift_height")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")
        if len(self.ready_seed) != _N_ARM:
            raise ValueError(f"ready_seed must have {_N_ARM} values, got {len(self.ready_seed)}")
        if len(self.ready_point) != 3:
            raise ValueError(f"ready_point must have 3 values, got {len(self.ready_point)}")
        if not isinstance(self.ik_iterations, int) or self.ik_iterations < 1:
            raise ValueError(f"ik_iterations must be an integer >= 1, got {self.ik_iterations!r}")
        for name in ("target_noise_std", "random_step_std"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not 0.0 <= self.random_fraction <= 1.0:
            raise ValueError(f"random_fraction must be in [0, 1], got {self.random_fraction!r}")
        if not isinstance(self.episode_steps, int) or self.episode_steps < 1:
            raise ValueError(f"episode_steps must be an integer >= 1, got {self.episode_steps!r}")
        for name in ("target_lower", "target_upper", "max_target_step"):
            if len(getattr(self, name)) not in (0, _N_ARM + 1):
                raise ValueError(f"{name} must be empty or have {_N_ARM + 1} values, got {len(getattr(self, name))}")
        if any(step <= 0 for step in self.max_target_step):
            raise ValueError(f"max_target_step must be > 0, got {self.max_target_step}")


def within_safety_limits(config: ExpertConfig, safety, control_period: float) -> ExpertConfig:
    """``config`` for an expert whose targets pass ``safety`` (a ``core.control.limits.SafetyConfig``
    in the sim's joint order) unchanged at ``control_period``: inside the position bounds (gripper
    range included) and within the per-cycle step and velocity limits."""
    lower, upper = safety.effective_position_bounds()
    step = np.minimum(safety.limits.max_step, safety.limits.max_velocity * control_period)
    return dataclasses.replace(config, target_lower=tuple(lower), target_upper=tuple(upper),
                               max_target_step=tuple(step * (1.0 - 1e-6)))


class ScriptedExpert:
    """Stateful pick-cube controller: ``reset()`` at each episode start, ``act(sim)`` each step."""

    def __init__(self, sim: So101Sim, config: ExpertConfig | None = None, seed: int | None = None) -> None:
        self.config = config if config is not None else ExpertConfig()
        model = sim.model
        self._model = model
        self._ik_data = mujoco.MjData(model)  # scratch: IK never disturbs the simulation
        self._site_id = sim.gripper_site_id
        self._body_id = int(model.site_bodyid[self._site_id])
        names = sim.joint_names
        self._qpos_adr = np.array([model.joint(n).qposadr[0] for n in names[:_N_ARM]])
        self._dof_adr = np.array([model.joint(n).dofadr[0] for n in names[:_N_ARM]])
        self._gain = model.actuator_gainprm[[model.actuator(n).id for n in names[:_N_ARM]], 0].copy()
        self._lower, self._upper = sim.joint_limits()
        if self.config.target_lower:
            self._lower = np.maximum(self._lower, self.config.target_lower)
            self._upper = np.minimum(self._upper, self.config.target_upper)
        self._max_step = np.asarray(self.config.max_target_step) if self.config.max_target_step else None
        self._dt = sim.control_period
        self._grasp_offset = self._fingertip_midpoint_offset()
        self._jac_pos = np.zeros((3, model.nv))
        self._jac_rot = np.zeros((3, model.nv))
        ready_rotation = self._down_rotation(np.array([0.0, 1.0, 0.0]))
        self.ready_q = self._solve_ik(np.array(self.config.ready_point), ready_rotation,
                                      np.array(self.config.ready_seed, dtype=np.float64))
        self.reset(seed)

    # ------------------------------------------------------------------------------ public
    @property
    def phase(self) -> Phase:
        return self._phase

    def reset(self, seed: int | None = None) -> None:
        """Start a new episode (call after ``sim.reset``). ``seed`` drives the noise."""
        self._rng = np.random.default_rng(seed)
        self._step = 0
        self._command: np.ndarray | None = None  # last arm IK solution + gripper, noise-free
        self._output: np.ndarray | None = None  # last target handed out (rate-limited)
        self._enter(Phase.READY)
        cfg = self.config
        length = round(cfg.random_fraction * cfg.episode_steps)
        start = int(self._rng.integers(0, cfg.episode_steps - length + 1)) if length else 0
        self._random_window = (start, start + length)

    def act(self, sim: So101Sim) -> np.ndarray:
        """Joint-position targets (rad, SO101_JOINT_NAMES order) for the next control period."""
        if self._command is None:
            self._command = sim.joint_positions()
        if self._output is None and self._max_step is not None:
            self._output = np.clip(sim.joint_positions(), self._lower, self._upper)  # rate-limit from where the arm is
        start, end = self._random_window
        if start <= self._step < end:
            if self._phase is not Phase.RANDOM:
                self._enter(Phase.RANDOM)
            step = self._rng.normal(0.0, self.config.random_step_std, size=self._command.shape)
            self._command = np.clip(self._command + step, self._lower, self._upper)
            target = self._command.copy()
        else:
            if self._phase is Phase.RANDOM:
                self._enter(Phase.READY)
            target = self._scripted_target(sim)
        self._step += 1
        self._phase_steps += 1
        if self.config.target_noise_std > 0:
            target = target + self._rng.normal(0.0, self.config.target_noise_std, size=target.shape)
        target = np.clip(target, self._lower, self._upper)
        if self._max_step is not None and self._output is not None:
            target = self._output + np.clip(target - self._output, -self._max_step, self._max_step)
        self._output = target
        return target.copy()

    def grasp_point(self, sim: So101Sim) -> np.ndarray:
        """World position of the point between the fingertips (the point the IK moves)."""
        rotation = sim.data.site_xmat[self._site_id].reshape(3, 3)
        return sim.data.site_xpos[self._site_id] + rotation @ self._grasp_offset

    # ----------------------------------------------------------------------------- phases
    def _enter(self, phase: Phase) -> None:
        self._phase = phase
        self._phase_steps = 0

    def _scripted_target(self, sim: So101Sim) -> np.ndarray:
        cfg = self.config
        cube_pos, cube_quat = sim.cube_pose()
        self._advance_phase(sim, cube_pos, cube_quat)
        assert self._command is not None

        if self._phase is Phase.READY:
            step = cfg.ready_joint_speed * self._dt
            arm = self._command[:_N_ARM]
            self._command = np.append(arm + np.clip(self.ready_q - arm, -step, step), cfg.gripper_open)
            return self._with_gravity_offset(sim, self._command)

        goal, speed, gripper = self._phase_goal(cube_pos)
        self._waypoint = self._waypoint + _clip_norm(goal - self._waypoint, speed * self._dt)
        arm = self._solve_ik(self._waypoint, self._rotation, self._command[:_N_ARM])
        self._command = np.append(arm, gripper)
        return self._with_gravity_offset(sim, self._command)

    def _phase_goal(self, cube_pos: np.ndarray) -> tuple[np.ndarray, float, float]:
        """(grasp point goal, waypoint speed, gripper target) of a Cartesian phase."""
        cfg = self.config
        if self._phase is Phase.APPROACH:
            return cube_pos + np.array([0.0, 0.0, cfg.hover_height]), cfg.approach_speed, cfg.gripper_open
        if self._phase is Phase.DESCEND:
            return cube_pos + np.array([0.0, 0.0, cfg.grasp_height]), cfg.descend_speed, cfg.gripper_open
        if self._phase is Phase.CLOSE:
            return self._waypoint, cfg.descend_speed, cfg.gripper_closed
        return self._lift_goal, cfg.lift_speed, cfg.gripper_closed  # LIFT, HOLD

    def _advance_phase(self, sim: So101Sim, cube_pos: np.ndarray, cube_quat: np.ndarray) -> None:
        """Move to the next phase when the current one's goal is met or it timed out."""
        cfg = self.config
        elapsed = self._phase_steps * self._dt
        timed_out = elapsed >= cfg.phase_timeout
        if self._phase is Phase.READY:
            settled = np.max(np.abs(sim.joint_positions()[:_N_ARM] - self.ready_q)) < cfg.ready_tolerance
            if settled or timed_out:
                self._waypoint = self.grasp_point(sim)
                self._rotation = self._down_rotation(self._jaw_direction(sim, cube_quat))
                self._enter(Phase.APPROACH)
            return
        if self._phase is Phase.CLOSE:
            # Lift once the jaws had time to close (a rate-limited gripper needs longer than close_duration).
            closed = self._output is None or self._output[-1] <= max(cfg.gripper_closed, self._lower[-1]) + 1e-3
            if elapsed >= cfg.close_duration and (closed or timed_out):
                lift_z = sim.cube_half_size + cfg.lift_height
                self._lift_goal = np.array([*self.grasp_point(sim)[:2], lift_z])
                self._enter(Phase.LIFT)
            return
        if self._phase not in (Phase.APPROACH, Phase.DESCEND, Phase.LIFT):
            return
        goal = self._phase_goal(cube_pos)[0]
        if np.linalg.norm(self.grasp_point(sim) - goal) < cfg.position_tolerance or timed_out:
            following = {Phase.APPROACH: Phase.DESCEND, Phase.DESCEND: Phase.CLOSE, Phase.LIFT: Phase.HOLD}
            self._enter(following[self._phase])

    def _with_gravity_offset(self, sim: So101Sim, command: np.ndarray) -> np.ndarray:
        """Targets that make the proportional servos settle at ``command`` despite gravity."""
        if not self.config.gravity_compensation:
            return command.copy()
        target = command.copy()
        target[:_N_ARM] += sim.data.qfrc_bias[self._dof_adr] / self._gain
        return target

    # ---------------------------------------------------------------------------- geometry
    def _fingertip_midpoint_offset(self) -> np.ndarray:
        """Point between the two fingertip pads at the grasp jaw angle, in the site frame."""
        model, data = self._model, self._ik_data
        data.qpos[model.joint(_GRIPPER_JOINT).qposadr[0]] = self.config.grasp_jaw_angle
        mujoco.mj_kinematics(model, data)
        midpoint = np.mean([data.geom_xpos[model.geom(name).id] for name in _JAW_PAD_GEOMS], axis=0)
        rotation = data.site_xmat[self._site_id].reshape(3, 3)
        return rotation.T @ (midpoint - data.site_xpos[self._site_id])

    def _jaw_direction(self, sim: So101Sim, cube_quat: np.ndarray) -> np.ndarray:
        """Horizontal cube face normal closest to the current jaw axis (least wrist roll)."""
        yaw = 2.0 * math.atan2(cube_quat[3], cube_quat[0])  # the cube only rotates about z on the table
        jaw = sim.data.site_xmat[self._site_id].reshape(3, 3)[:, _JAW_AXIS]
        candidates = [np.array([math.cos(yaw + k * math.pi / 2), math.sin(yaw + k * math.pi / 2), 0.0])
                      for k in range(4)]
        return max(candidates, key=lambda normal: float(normal @ jaw))

    @staticmethod
    def _down_rotation(jaw_direction: np.ndarray) -> np.ndarray:
        """Site orientation with the approach axis straight down and the jaw axis as given."""
        rotation = np.zeros((3, 3))
        rotation[:, _APPROACH_AXIS] = _DOWN
        rotation[:, _JAW_AXIS] = jaw_direction / np.linalg.norm(jaw_direction)
        rotation[:, 1] = np.cross(rotation[:, 2], rotation[:, 0])
        return rotation

    def _solve_ik(self, point: np.ndarray, rotation: np.ndarray, seed: np.ndarray) -> np.ndarray:
        """Arm joints putting the fingertip midpoint at ``point`` with the site at ``rotation``.

        Damped least squares on the stacked position / weighted orientation Jacobian, clipped
        to the joint limits after every iteration.
        """
        cfg = self.config
        model, data = self._model, self._ik_data
        lower, upper = self._lower[:_N_ARM], self._upper[:_N_ARM]
        damping = cfg.ik_damping**2 * np.eye(6)
        q = np.clip(seed.astype(np.float64), lower, upper)
        for _ in range(cfg.ik_iterations):
            data.qpos[self._qpos_adr] = q
            mujoco.mj_kinematics(model, data)
            mujoco.mj_comPos(model, data)
            site_rotation = data.site_xmat[self._site_id].reshape(3, 3)
            current = data.site_xpos[self._site_id] + site_rotation @ self._grasp_offset
            rotation_error = 0.5 * np.sum(np.cross(site_rotation, rotation, axis=0), axis=1)
            error = np.concatenate([point - current, cfg.orientation_weight * rotation_error])
            if np.linalg.norm(error) < cfg.ik_tolerance:
                break
            mujoco.mj_jac(model, data, self._jac_pos, self._jac_rot, current, self._body_id)
            jacobian = np.vstack([self._jac_pos[:, self._dof_adr],
                                  cfg.orientation_weight * self._jac_rot[:, self._dof_adr]])
            delta = jacobian.T @ np.linalg.solve(jacobian @ jacobian.T + damping, error)
            q = np.clip(q + delta, lower, upper)
        return q


def _clip_norm(vector: np.ndarray, max_norm: float) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector if norm <= max_norm else vector * (max_norm / norm)
