"""Fitting a pretrained LeRobot VLA to this robot: state/action dimensions, camera views, executed chunk.

A pretrained checkpoint describes the robots it was trained on (pi05_base: 32-d padded state and action,
three cameras, 50 actions executed per chunk). pi0 / pi0.5 / SmolVLA pad state and action to
``max_state_dim`` / ``max_action_dim`` inside the model and share one vision tower across cameras, so a
robot with fewer dimensions and other cameras needs no new weights, only a config that says so:

- ``input_features["observation.state"]`` / ``output_features["action"]`` get the robot's dimensions
  (at most the model's padded ones: more cannot be adapted without new projection weights);
- the image features become exactly the robot's views (the tower has no per-camera weights), at the
  resolution the checkpoint was trained at;
- ``n_action_steps`` becomes the executed chunk, which must equal the world model's frame skip (the world
  model predicts the views after exactly that many actions) and cannot exceed the model's ``chunk_size``.

The checkpoint's normalisation statistics describe other robots' dimensions: they are not used; the
processors are rebuilt from the robot's data (``fit_normalization``) before anything is predicted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RobotInterface:
    """What the robot gives and takes: dims, the LeRobot image key of each view, actions per chunk."""

    state_dim: int
    action_dim: int
    view_keys: dict[str, str]  # view name -> LeRobot image key (observation.images.<...>)
    executed_chunk: int  # actions executed per chunk = the world model's frame skip (world_model.data.chunk_size)

    def __post_init__(self) -> None:
        for name in ("state_dim", "action_dim", "executed_chunk"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.view_keys:
            raise ValueError("view_keys must name at least one view")


def check_frame_skip(policy_chunk: int, world_model_chunk: int) -> None:
    """The executed chunk must be the world model's frame skip: imagination steps one chunk at a time."""
    if policy_chunk != world_model_chunk:
        raise ValueError(f"the policy executes {policy_chunk} actions per chunk but world_model.data.chunk_size "
                         f"(the world model's frame skip) is {world_model_chunk}: they must be equal")


def adapt_config(lerobot_config: Any, robot: RobotInterface, source: str = "the checkpoint") -> list[str]:
    """Rewrite a LeRobot pi0/pi0.5/SmolVLA config in place for ``robot``; returns what changed (for the log).
    ValueError, naming the field, for what cannot be adapted."""
    from lerobot.configs import FeatureType, PolicyFeature

    kind = getattr(lerobot_config, "type", "policy")
    if robot.state_dim > int(lerobot_config.max_state_dim):
        raise ValueError(f"state_dim: the robot's state has {robot.state_dim} dims, {source} ({kind}) pads states to "
                         f"max_state_dim {lerobot_config.max_state_dim}: cannot be adapted without new weights")
    if robot.action_dim > int(lerobot_config.max_action_dim):
        raise ValueError(f"action_dim: the robot's action has {robot.action_dim} dims, {source} ({kind}) pads actions "
                         f"to max_action_dim {lerobot_config.max_action_dim}: cannot be adapted without new weights")
    if robot.executed_chunk > int(lerobot_config.chunk_size):
        raise ValueError(f"executed_chunk: {robot.executed_chunk} actions per chunk, but {source} ({kind}) denoises "
                         f"chunk_size {lerobot_config.chunk_size}")
    images = dict(lerobot_config.image_features)
    shape = next(iter(images.values())).shape if images else (3, *getattr(lerobot_config, "image_resolution", (224, 224)))
    changes = []
    old_state = lerobot_config.input_features.get("observation.state")
    old_action = lerobot_config.output_features.get("action")
    features = {key: feature for key, feature in lerobot_config.input_features.items()
                if feature.type not in (FeatureType.VISUAL, FeatureType.STATE)}
    features.update({key: PolicyFeature(FeatureType.VISUAL, tuple(shape)) for key in robot.view_keys.values()})
    features["observation.state"] = PolicyFeature(FeatureType.STATE, (robot.state_dim,))
    if sorted(images) != sorted(robot.view_keys.values()):
        changes.append(f"views {sorted(images)} -> {sorted(robot.view_keys.values())}")
    if old_state is None or tuple(old_state.shape) != (robot.state_dim,):
        changes.append(f"state {None if old_state is None else tuple(old_state.shape)} -> ({robot.state_dim},)")
    if old_action is None or tuple(old_action.shape) != (robot.action_dim,):
        changes.append(f"action {None if old_action is None else tuple(old_action.shape)} -> ({robot.action_dim},)")
    if int(lerobot_config.n_action_steps) != robot.executed_chunk:
        changes.append(f"n_action_steps {lerobot_config.n_action_steps} -> {robot.executed_chunk}")
    lerobot_config.input_features = features
    lerobot_config.output_features = {**lerobot_config.output_features,
                                      "action": PolicyFeature(FeatureType.ACTION, (robot.action_dim,))}
    lerobot_config.n_action_steps = robot.executed_chunk
    if hasattr(lerobot_config, "empty_cameras"):
        lerobot_config.empty_cameras = 0  # the robot's views are all there is
    return changes


def normalizer_dims(pipeline: Any) -> dict[str, int]:
    """Feature key -> dimension of the statistics a processor pipeline normalises with (empty: none)."""
    dims: dict[str, int] = {}
    for step in getattr(pipeline, "steps", []):
        for key, stats in (getattr(step, "stats", None) or {}).items():
            for value in stats.values():
                shape = getattr(value, "shape", None)
                dims[key] = int(shape[-1]) if shape else len(value)
                break
    return dims
