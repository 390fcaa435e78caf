"""When an RL update may replace the running policy: decisions on evidence, each with its reason.

Three checks, used by the trainer (validation, calibration) and the finetune loop (reward trust):
- ``accept_update``: the candidate's validation success (deterministic rollouts from fixed start states)
  must not fall, and with ``require_success`` it must be above zero and the old policy's below one: 0 -> 0
  and 1 -> 1 show nothing, so nothing is accepted on them; a NaN (not measured) is no evidence either (a
  trainer without validation does not call this).
- ``imagination_calibrated`` (``MBPOConfig.calibrated_validation``): before any RL, the running policy's
  imagined validation success must agree with its measured real success (Wilson 95 % interval).
- ``trust_reward``: the world model's Yes/No reward must have had at least ``min_precision`` on real
  frames it had not been trained on; not measured, or NaN (it said Yes to none of them, so precision is
  undefined), is no trust.
"""

from __future__ import annotations

import math
from typing import Any

from vla_mbpo_ros.core.util.success_stats import wilson_interval


def accept_update(before: float, after: float, require_success: bool = True) -> tuple[bool, str]:
    """(accepted, why) of a candidate from its validation success before and after training."""
    change = f"imagined success {before:.2f} -> {after:.2f}"
    if math.isnan(before) or math.isnan(after):
        return False, f"{change}: not measured"
    if after < before:
        return False, f"{change}: dropped"
    if require_success and after <= 0.0:
        return False, f"{change}: no success to show"
    if require_success and before >= 1.0:
        # A world model that imagines every validation episode succeeding cannot show a gain: the learning
        # bench measured such 1 -> 1 acceptances with the UMM's transition reward going -20 and +30 points.
        return False, f"{change}: saturated, no gain to show"
    return True, change


def imagination_calibrated(imagined: float, real_successes: int, real_episodes: int) -> tuple[bool, str]:
    """(calibrated, why): the running policy's imagined validation success must lie inside the Wilson 95 %
    interval of its success in ``real_episodes`` real episodes. A world model that imagines the running policy
    far better (or worse) than it really does has no say on a candidate: "no drop" in it is no evidence."""
    if real_episodes <= 0:
        return False, "imagination not calibrated: no real episodes of the running policy to compare with"
    low, high = wilson_interval(real_successes, real_episodes)
    if math.isnan(imagined) or not low <= imagined <= high:
        return False, (f"imagination not calibrated: imagined success {imagined:.2f} of the running policy, real "
                       f"{real_successes}/{real_episodes} [{low:.2f}, {high:.2f}]")
    return True, ""


def trust_reward(world_model_metrics: dict[str, Any], min_precision: float) -> tuple[bool, str]:
    """(trusted, why) of the imagined reward, from its precision on frames it had not been trained on."""
    if min_precision <= 0:
        return True, ""
    if "held_out_reward_precision" not in world_model_metrics:
        return False, "reward not measured on unseen real frames"
    precision = float(world_model_metrics["held_out_reward_precision"])
    if math.isnan(precision):
        return False, "reward precision nan on unseen real frames (no Yes answered: nothing measured)"
    if precision < min_precision:
        return False, f"reward precision {precision:.2f} < {min_precision:.2f} on unseen real frames"
    return True, ""
