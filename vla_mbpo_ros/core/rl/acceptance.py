"""When an RL update may replace the running policy: decisions on evidence, each with its reason.

Two checks, used by the trainer (validation) and the finetune loop (reward trust):
- ``accept_update``: the candidate's validation success (deterministic rollouts from fixed start states)
  must not fall, and with ``require_success`` it must be above zero and the old policy's below one: 0 -> 0
  and 1 -> 1 show nothing, so nothing is accepted on them; a NaN (not measured) is no evidence either (a
  trainer without validation does not call this).
- ``trust_reward``: the world model's Yes/No reward must have had at least ``min_precision`` on real
  frames it had not been trained on; not measured, or NaN (it said Yes to none of them, so precision is
  undefined), is no trust.
"""

from __future__ import annotations

import math
from typing import Any


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
