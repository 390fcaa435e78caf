"""VLA-MBPO learning bench (issues #7, #20): simulated SO-101 pick-cube, in-process (no ROS).

Per seed (one worker process each, --jobs at once):
1. BC: the compact flow VLA (CompactFlowVLA) behaviour-cloned from the successful ones of --demos
   scripted-expert demonstrations (rendered once, then cached in --demo-cache), with random-shift
   augmentation of the views (--bc-shift-px).
2. From the BC weights, each method gets the same budget of real (simulator) episodes, --real-episodes per
   iteration for --iterations iterations, collected with the current policy's Flow-SDE samples:
     ppo       model-free PPO in the simulator: the real episodes themselves are the PPO data
               (MBPOTrainer, full_horizon mode, SimWorldModel, episode_budget);
     mbpo_sim  VLA-MBPO with the simulator as world model (upper bound): real episodes (and the demos) give
               chunk-aligned start states; imagined branched rollouts (n chunks) run in the simulator from
               their exact physics states and are not counted as real episodes;
     mbpo_umm  VLA-MBPO with the tiny UMM world model (the pretrained one of `make world-model`) finetuned on
               the demos + real episodes, gated like the finetune loop; skipped with a reason if unavailable.
3. BC and every method's final policy are evaluated deterministically on the same --eval-episodes start
   states (sim seeds 1_000_000 + --eval-offset + i): per-episode successes go to seed_S/results.json.
Then the aggregate over seeds (summary.json, success.png): IQM with a hierarchical bootstrap 95 % interval
(seeds and episodes resampled, core/util/success_stats.py) and each method's paired difference to BC.

    python bench/learning_bench.py --out /tmp/learning_bench                 # seeds 0,1,2, the defaults
    python bench/learning_bench.py --out /tmp/lb --eval-offset 5000          # start states nobody tuned on
    python bench/learning_bench.py --out /tmp/lb --quick --seeds 0           # smoke run of every stage
    python bench/learning_bench.py --out /tmp/all --combine /tmp/lb_sim /tmp/lb_umm   # one table of two runs

Seeds: demos use sim/expert seeds 0..demos-1, real episodes 10_000 + i; the policy, BC and RL use the seed.

RL recipe (docs/learning.md): group advantages (8 branches per start state, leave-one-out baseline, no
critic in the actor's signal), the per-dimension mean log-ratio, clip 0.2, an approx-KL early stop at 0.05
per dimension, actor lr 3e-4 (the 0.55 M-parameter policy; 3e-5 moved it by a KL of 3e-5 per refill),
a BC anchor (0.1 x the flow-matching loss on the demos), validation on whole episodes from episode
starts, the validation gate of core/rl/acceptance.py (no 0 -> 0, no drop). The policy acts at 10 Hz (each action
held for 3 control steps at 30 Hz), so a k = 10 chunk is 1 s and the scripted pick about 3-4 chunks.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vla_mbpo_ros.core.data.episode import Episode  # noqa: E402
from vla_mbpo_ros.core.policy.bc import BCArrays, BCConfig, train_bc  # noqa: E402
from vla_mbpo_ros.core.policy.compact import CompactFlowVLA, CompactFlowVLAConfig  # noqa: E402
from vla_mbpo_ros.core.policy.flow_sde import FlowSDEConfig  # noqa: E402
from vla_mbpo_ros.core.policy.value_head import ValueHeadConfig  # noqa: E402
from vla_mbpo_ros.core.rl.ppo import PPOConfig  # noqa: E402
from vla_mbpo_ros.core.rl.start_states import StartStateSampler  # noqa: E402
from vla_mbpo_ros.core.rl.trainer import MBPOConfig, MBPOTrainer  # noqa: E402
from vla_mbpo_ros.core.sim import SimConfig, So101Sim  # noqa: E402
from vla_mbpo_ros.core.sim.rollouts import EpisodeConfig, evaluate_policy, expert_episodes, policy_episodes  # noqa: E402
from vla_mbpo_ros.core.sim.world_model import SimWorldModel, SimWorldModelConfig, sim_start_states  # noqa: E402
from vla_mbpo_ros.core.util.success_stats import Estimate, iqm_interval, paired_difference, wilson_interval  # noqa: E402

METHODS = ("ppo", "mbpo_sim", "mbpo_umm")
LABELS = {"ppo": "model-free PPO (sim)", "mbpo_sim": "VLA-MBPO, sim world model",
          "mbpo_umm": "VLA-MBPO, UMM world model"}
DEMO_SEED_BASE, REAL_SEED_BASE, EVAL_SEED_BASE = 0, 10_000, 1_000_000

# --quick: a smoke run of every stage at toy sizes (numbers are not meaningful).
QUICK = dict(demos=6, bc_steps=150, iterations=2, real_episodes=4, eval_episodes=8, image_size=32, max_steps=120,
             samples_per_refill=48, refills=1, update_to_data=4, minibatch=48, critic_warmup=2, recompute_every=2,
             validation_starts=8, umm_steps=15, umm_vq_steps=20, umm_first_steps=20, imagination_checks=8,
             render_size=32)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("/tmp/learning_bench"), help="output directory")
    parser.add_argument("--quick", action="store_true", help="smoke-run preset (explicit flags still win)")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {METHODS}")
    parser.add_argument("--seeds", default="0,1,2",
                        help="comma-separated seeds, one process each (policy init, BC, RL sampling); their "
                             "results are aggregated (IQM, bootstrap 95 %% intervals, paired difference to BC)")
    parser.add_argument("--seed", type=int, default=None, help="run this one seed in this process (a worker)")
    parser.add_argument("--jobs", type=int, default=0, help="seed processes at once (0: min(seeds, CPU cores))")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--combine", type=Path, nargs="+", default=None, metavar="RUN",
                        help="run nothing: one summary (into --out) of these runs' seeds, e.g. methods run "
                             "separately from the same --load-bc policies; their BC evaluations must match")
    task = parser.add_argument_group("task and budget")
    task.add_argument("--demos", type=int, default=80, help="scripted-expert demonstrations for BC")
    task.add_argument("--demo-cache", default="~/.cache/vla_mbpo_ros/bench_demos",
                      help="directory of rendered demos reused across runs ('' = render every time)")
    task.add_argument("--iterations", type=int, default=5, help="RL iterations, each with --real-episodes real episodes")
    task.add_argument("--real-episodes", type=int, default=10, help="real (sim) episodes per iteration")
    task.add_argument("--eval-episodes", type=int, default=200,
                      help="deterministic evaluation episodes of BC and of every method's final policy, from the "
                           "same start states")
    task.add_argument("--eval-offset", type=int, default=0,
                      help="evaluation start states are sim seeds 1_000_000 + offset + i: a new offset gives start "
                           "states nobody tuned on")
    task.add_argument("--curve-eval-episodes", type=int, default=0,
                      help="evaluation episodes after every iteration but the last, for the curve (0: none)")
    task.add_argument("--image-size", type=int, default=32, help="policy input (px; the policy resizes its views)")
    task.add_argument("--render-size", type=int, default=96,
                      help="rendered views (px): the ROS graph's sim camera size (config/sim_robot.yaml), which the "
                           "pretrained UMM's play corpus was recorded at")
    task.add_argument("--settle-frames", type=int, default=5,
                      help="recorded frames after a success (the ROS episode manager records 0.5 s more)")
    task.add_argument("--max-steps", type=int, default=150, help="control steps per episode (30 Hz)")
    task.add_argument("--control-steps-per-action", type=int, default=3,
                      help="control steps each policy action is held (3: the ROS graph's 10 Hz policy rate)")
    policy = parser.add_argument_group("policy and BC")
    policy.add_argument("--chunk-size", type=int, default=10)
    policy.add_argument("--width", type=int, default=64)
    policy.add_argument("--inference-steps", type=int, default=3,
                        help="deterministic denoising steps at evaluation (3 = the Flow-SDE K that RL optimises)")
    policy.add_argument("--bc-steps", type=int, default=4000)
    policy.add_argument("--bc-batch", type=int, default=32)
    policy.add_argument("--bc-lr", type=float, default=1e-3)
    policy.add_argument("--bc-schedule", choices=("cosine", "constant"), default="cosine",
                        help="BC learning-rate schedule (cosine: warm-up, then decay to 0)")
    policy.add_argument("--bc-shift-px", type=int, default=5,
                        help="BC random-shift augmentation, pixels at --render-size (0: off)")
    policy.add_argument("--load-bc", type=Path, default=None,
                        help="BC checkpoint to start from instead of training ({seed} is replaced by the seed, e.g. "
                             "OLD/seed_{seed}/bc_policy of an earlier run)")
    rl = parser.add_argument_group("RL (shared by all methods)")
    rl.add_argument("--actor-lr", type=float, default=3e-4)
    rl.add_argument("--critic-lr", type=float, default=1e-3)
    rl.add_argument("--clip", type=float, default=0.2, help="PPO ratio clip (both sides)")
    rl.add_argument("--update-to-data", type=int, default=10, help="PPO steps per refill")
    rl.add_argument("--minibatch", type=int, default=256)
    rl.add_argument("--critic-warmup", type=int, default=0, help="critic-only steps after each refill")
    rl.add_argument("--recompute-every", type=int, default=5)
    rl.add_argument("--num-chunks", type=int, default=2, help="n, imagined chunks per branch (MBPO)")
    rl.add_argument("--samples-per-refill", type=int, default=256, help="imagined transitions per refill (MBPO)")
    rl.add_argument("--refills", type=int, default=2, help="MBPO refills (+ PPO phases) per iteration")
    rl.add_argument("--target-kl", type=float, default=0.05,
                    help="approx-KL (per action dimension) that ends a refill's actor steps (0: off)")
    rl.add_argument("--advantage", choices=("gae", "group"), default="group",
                    help="gae: the critic's chunk GAE (paper); group: leave-one-out baseline over --group-size "
                         "branches of one start state")
    rl.add_argument("--group-size", type=int, default=8, help="branches per start state")
    rl.add_argument("--bc-anchor", type=float, default=0.1,
                    help="weight of the flow-matching loss on the demos in every actor step (0: off)")
    rl.add_argument("--validation-from", choices=("sampled", "initial"), default="initial",
                    help="MBPO validation from sampled chunk-aligned frames (n chunks) or from episode starts "
                         "(whole episodes)")
    rl.add_argument("--calibrated-validation", action=argparse.BooleanOptionalAction, default=False,
                    help="VLA-MBPO: hold an iteration's update before any RL unless the running policy's imagined "
                         "validation success lies in the Wilson 95 %% interval of its success in the iteration's "
                         "real episodes (MBPOConfig.calibrated_validation)")
    rl.add_argument("--validation-starts", type=int, default=64,
                    help="imagined start states of the MBPO accept/rollback check (0: off)")
    umm = parser.add_argument_group("UMM world model (mbpo_umm)")
    umm.add_argument("--umm-pretrained", default="~/.cache/vla_mbpo_ros/umm_sim/model",
                     help="pretrained UMM to finetune (make world-model builds it); '' = random init")
    umm.add_argument("--imagination-checks", type=int, default=64,
                     help="imagined branches per iteration replayed in the sim (false-success rate)")
    umm.add_argument("--umm-image-size", type=int, default=32, help="random-init UMM only")
    umm.add_argument("--umm-vq-steps", type=int, default=300, help="VQ tokenizer fit (random-init UMM only)")
    umm.add_argument("--umm-first-steps", type=int, default=300, help="training steps on the demos")
    umm.add_argument("--umm-steps", type=int, default=60, help="finetuning steps after each iteration's episodes")
    umm.add_argument("--umm-lr", type=float, default=1e-3)
    umm.add_argument("--umm-generated-reward", action=argparse.BooleanOptionalAction, default=False,
                     help="train the Yes/No reward also on what the UMM generates from the real transitions: head "
                          "frames (next_frame; measured: precision on new real episodes fell to 0-0.5, "
                          "docs/learning.md) or transitions from generated views (transition)")
    umm.add_argument("--umm-reward-from", choices=("next_frame", "transition"), default=None,
                     help="what the Yes/No reward reads: the generated head frame, or the current views and the "
                          "chunk (world_model.reward_from); default: the pretrained model's own")
    umm.add_argument("--umm-min-reward-precision", type=float, default=0.9,
                     help="the finetune loop's reward gate (config/finetune_sim.yaml): no policy phase in an "
                          "iteration whose held-out reward precision is lower (0 = off)")
    umm.add_argument("--umm-recalibrate-to", type=float, default=0.0,
                     help="after scoring the reward on an iteration's new episodes, move its threshold to the highest "
                          "recall at this precision on them (world_model.reward_calibration_precision; 0 = off; "
                          "measured at 0.95: no gain, docs/learning.md)")
    umm.add_argument("--umm-answer-weight", type=float, default=1.0,
                     help="weight of the Yes/No reward loss (paper 0.01 is for a pretrained Janus; at 0.01 the "
                          "random-init tiny UMM never answered Yes)")
    quick, _ = parser.parse_known_args(argv)
    if quick.quick:
        parser.set_defaults(**QUICK)
    args = parser.parse_args(argv)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(args.methods) - set(METHODS))
    if unknown:
        parser.error(f"--methods: unknown {unknown}, choose from {METHODS}")
    return args


# ----------------------------------------------------------------------------------------------- setup
def build_policy(args: argparse.Namespace) -> CompactFlowVLA:
    torch.manual_seed(args.seed)
    return CompactFlowVLA(CompactFlowVLAConfig(
        view_names=("head", "wrist"), image_size=args.image_size, chunk_size=args.chunk_size, width=args.width,
        conv_channels=(16, 32), inference_steps=args.inference_steps, sde=FlowSDEConfig(num_steps=3, noise_level=0.5),
        value_head=ValueHeadConfig((1024, 512, 256, 128))))


def bc_config(args: argparse.Namespace) -> BCConfig:
    return BCConfig(steps=args.bc_steps, batch_size=args.bc_batch, learning_rate=args.bc_lr, seed=args.seed,
                    lr_schedule=args.bc_schedule, shift_px=args.bc_shift_px)


def mbpo_config(args: argparse.Namespace, mode: str) -> MBPOConfig:
    ppo = PPOConfig(clip_low=args.clip, clip_high=args.clip, actor_lr=args.actor_lr, critic_lr=args.critic_lr,
                    target_kl=args.target_kl)
    common = dict(update_to_data=args.update_to_data, minibatch_size=args.minibatch, seed=args.seed,
                  critic_warmup_updates=args.critic_warmup, recompute_every=args.recompute_every, ppo=ppo,
                  advantage_estimator=args.advantage, group_size=args.group_size, bc_anchor_coef=args.bc_anchor)
    if mode == "full_horizon":
        # One iteration's real episodes are few (10): groups of two episodes from one start state.
        common["group_size"] = min(args.group_size, 2)
        horizon = math.ceil(args.max_steps / (args.chunk_size * args.control_steps_per_action))
        return MBPOConfig(rollout_mode="full_horizon", full_horizon_chunks=horizon, num_iterations=1,
                          samples_per_refill=args.real_episodes * horizon, rollout_batch_size=64,
                          episode_budget=args.real_episodes * args.iterations, validation_starts=0, **common)
    return MBPOConfig(rollout_mode="branched", num_chunks=args.num_chunks, num_iterations=args.refills,
                      samples_per_refill=args.samples_per_refill, rollout_batch_size=64,
                      validation_starts=args.validation_starts, validation_from=args.validation_from,
                      calibrated_validation=args.calibrated_validation,
                      validation_chunks=args.num_chunks if args.validation_from == "sampled" else
                      math.ceil(args.max_steps / (args.chunk_size * args.control_steps_per_action)), **common)


def episode_config(args: argparse.Namespace, record: bool) -> EpisodeConfig:
    return EpisodeConfig(max_steps=args.max_steps, record=record,
                         control_steps_per_action=args.control_steps_per_action,
                         settle_frames=args.settle_frames if record else 0)


def sim_world_model(sim: So101Sim, args: argparse.Namespace) -> SimWorldModel:
    return SimWorldModel(sim, SimWorldModelConfig(control_steps_per_action=args.control_steps_per_action))


def real_seeds(args: argparse.Namespace, iteration: int) -> list[int]:
    start = REAL_SEED_BASE + iteration * args.real_episodes
    return list(range(start, start + args.real_episodes))


# --------------------------------------------------------------------------------------------- methods
class Method:
    """One RL method from the BC weights: ``iteration(i)`` spends ``real_episodes`` real episodes."""

    def __init__(self, name: str, policy: CompactFlowVLA, sim: So101Sim, args: argparse.Namespace) -> None:
        self.name, self.policy, self.sim, self.args = name, policy, sim, args
        self.episode_config = episode_config(args, record=True)
        self.generator = torch.Generator().manual_seed(args.seed + 1)
        self.real_episodes_used = 0

    def collect(self, iteration: int) -> list[dict]:
        """This iteration's real episodes, Flow-SDE exploration with the current policy."""
        episodes = policy_episodes(self.policy, self.sim, real_seeds(self.args, iteration), self.episode_config,
                                   self.generator)
        self.real_episodes_used += len(episodes)
        return episodes


def ppo_diagnostics(history: list[dict[str, float]]) -> dict[str, float]:
    """CleanRL's PPO diagnostics averaged over the refills whose actor was updated (a refill without any
    reward trains the critic only and has no actor figures); explained variance over all refills."""
    updated = [h for h in history if h.get("actor_updated")]
    stats = {"actor_refills": float(len(updated)), "refills": float(len(history)),
             "explained_variance": float(np.nanmean([h["explained_variance"] for h in history])) if history else
             float("nan")}
    for key in ("actor_loss", "approx_kl", "clip_fraction", "actor_steps", "anchor_loss"):
        if updated and all(key in h for h in updated):
            stats[key] = float(np.mean([h[key] for h in updated]))
    if updated:
        stats["ratio_min"] = float(min(h.get("ratio_min", np.nan) for h in updated))
        stats["ratio_max"] = float(max(h.get("ratio_max", np.nan) for h in updated))
        stats["kl_stops"] = float(sum(h.get("kl_stopped_at", -1) >= 0 for h in updated))
    if history:
        stats["sde_sigma_max"] = history[0].get("sde_sigma_max", float("nan"))
    return stats


class ModelFreePPO(Method):
    """PPO on the real episodes themselves: full-horizon Flow-SDE episodes in the simulator."""

    def __init__(self, name: str, policy: CompactFlowVLA, sim: So101Sim, args: argparse.Namespace,
                 anchor: BCArrays | None = None) -> None:
        super().__init__(name, policy, sim, args)
        self.trainer = MBPOTrainer(policy, sim_world_model(sim, args), StartStateSampler(args.chunk_size),
                                   mbpo_config(args, "full_horizon"), anchor=anchor)

    def iteration(self, iteration: int) -> dict[str, float]:
        # Each branch of a full-horizon refill is one real episode; the trainer draws its start states (with
        # replacement) from this iteration's seeded resets.
        sampler = StartStateSampler(self.args.chunk_size)
        sampler.states = sim_start_states(self.sim, real_seeds(self.args, iteration), self.episode_config.instruction)
        self.trainer.start_states = sampler
        stats = self.trainer.iteration()
        self.real_episodes_used = self.trainer.episodes_used
        return {"real_success": stats["imagined_success"], **ppo_diagnostics([stats])}


class BranchedMBPO(Method):
    """VLA-MBPO: start states from demos + real episodes, imagined branched rollouts in ``world_model``."""

    def __init__(self, name: str, policy: CompactFlowVLA, sim: So101Sim, demos: list[Episode],
                 args: argparse.Namespace, world_model: Any, anchor: BCArrays | None = None) -> None:
        super().__init__(name, policy, sim, args)
        self.sampler = StartStateSampler(args.chunk_size)
        self.sampler.add_episodes(demos)
        self.trainer = MBPOTrainer(policy, world_model, self.sampler, mbpo_config(args, "branched"), anchor=anchor)

    def learn_from(self, episodes: list[Episode], iteration: int) -> dict[str, float]:
        self.sampler.add_episodes(episodes)
        return {}

    def trusts_world_model(self, stats: dict[str, float]) -> bool:
        return True

    def iteration(self, iteration: int) -> dict[str, float]:
        episodes = self.collect(iteration)
        stats = self.learn_from(episodes, iteration)
        real_success = float(np.mean([e.success for e in episodes]))
        if not self.trusts_world_model(stats):  # as the finetune loop: no policy phase on an untrusted reward
            return {"real_success": real_success, "accepted": 0.0, "reward_trusted": 0.0, **stats}
        result = self.trainer.train(real_success=(sum(bool(e.success) for e in episodes), len(episodes)))
        return {"real_success": real_success,
                "imagined_success": float(np.mean([h["imagined_success"] for h in result["history"]]))
                if result["history"] else float("nan"), "calibrated": float(result.get("calibrated", True)),
                "validation_before": result["success_before"], "validation_after": result["success_after"],
                "accepted": float(result["accepted"]), **ppo_diagnostics(result["history"]), **stats}


class UMMBranchedMBPO(BranchedMBPO):
    """VLA-MBPO with the UMM: the pretrained tiny UMM (make world-model) finetuned on the demos, then on
    every iteration's real episodes before its policy phase; ``--umm-pretrained ''`` starts from random
    weights instead (fitting its VQ tokenizer first).

    Before the UMM sees an iteration's real episodes they are its held-out data: its Yes/No reward is scored
    on their labelled frames, and its imagined branches from their start states are replayed in the
    simulator (same physics state, same chunks) to count imagined successes that did not happen."""

    def __init__(self, name: str, policy: CompactFlowVLA, sim: So101Sim, demos: list[Episode],
                 args: argparse.Namespace, anchor: BCArrays | None = None) -> None:
        from vla_mbpo_ros.core.world_model.configuration import TinyArchConfig, WorldModelConfig
        from vla_mbpo_ros.core.world_model.data import DataConfig, action_stats
        from vla_mbpo_ros.core.world_model.umm import UMMWorldModel

        self.data_config = DataConfig(chunk_size=args.chunk_size, yes_oversample=3,
                                      generated_reward=args.umm_generated_reward)
        self.wm_episodes = list(demos)
        self.wm_log: list[dict[str, float]] = []
        if args.umm_pretrained:
            from vla_mbpo_ros.core.world_model.pretrain import verify_pretrained

            directory = Path(args.umm_pretrained).expanduser()
            verify_pretrained(directory)  # FileNotFoundError (-> skipped, with the reason) until built
            overrides = {"reward_from": args.umm_reward_from} if args.umm_reward_from else {}
            self.world_model = UMMWorldModel.from_pretrained(directory, config_overrides=overrides)
            vq_steps = 0
        else:
            self.world_model = UMMWorldModel.tiny(
                ("head", "wrist"), action_stats(self.wm_episodes), args.umm_image_size, seed=args.seed,
                arch=TinyArchConfig(image_size=args.umm_image_size), instructions=[EpisodeConfig().instruction],
                config=WorldModelConfig(view_names=("head", "wrist"), reward_from=args.umm_reward_from or "next_frame"))
            vq_steps = args.umm_vq_steps
        self._fit(args, args.umm_first_steps, vq_steps=vq_steps, seed=args.seed)
        super().__init__(name, policy, sim, demos, args, world_model=self.world_model, anchor=anchor)
        self.replay_world = sim_world_model(sim, args)

    def _fit(self, args: argparse.Namespace, steps: int, vq_steps: int, seed: int) -> None:
        from vla_mbpo_ros.core.world_model.train import TrainConfig, train_world_model

        dynamics, reward = self.world_model.training_samples(self.wm_episodes, self.data_config)
        config = TrainConfig(steps=steps, batch_size=8, reward_batch_size=8, lr=args.umm_lr, warmup_steps=20,
                             vq_fit_steps=vq_steps, vq_fit_batch_size=16, seed=seed, log_every=max(1, steps),
                             answer_loss_weight=args.umm_answer_weight)
        history, seconds = timed(lambda: train_world_model(self.world_model, dynamics, reward, config, progress=False))
        self.wm_log.append({"steps": steps, "seconds": seconds,
                            "image_loss_last": float(np.mean(history.image_loss[-20:])),
                            "answer_loss_last": float(np.mean(history.answer_loss[-20:])) if history.answer_loss
                            else float("nan")})

    def learn_from(self, episodes: list[Episode], iteration: int) -> dict[str, float]:
        # The imagination check first: the reward's threshold is then recalibrated on these episodes' frames.
        held_out = {**self.imagination_check(episodes), **self.reward_scores(episodes)}
        super().learn_from(episodes, iteration)
        self.wm_episodes += episodes
        self._fit(self.args, self.args.umm_steps, vq_steps=0, seed=self.args.seed + 1 + iteration)
        return {**held_out, "wm_image_loss": self.wm_log[-1]["image_loss_last"]}

    def trusts_world_model(self, stats: dict[str, float]) -> bool:
        """The finetune loop's gate (``world_model.min_reward_precision``) on the precision just measured on
        episodes the UMM had not been trained on."""
        from vla_mbpo_ros.core.rl.acceptance import trust_reward as reward_gate

        measured = {"held_out_reward_precision": stats["reward_precision"]} if "reward_precision" in stats else {}
        return reward_gate(measured, self.args.umm_min_reward_precision)[0]

    def reward_scores(self, episodes: list[Episode]) -> dict[str, float]:
        """Precision and recall of the UMM's Yes, and AUROC of its P(Yes), on these (not yet trained on)
        episodes' labelled frames (or transitions: ``--umm-reward-from``); then its threshold recalibrated on them (``--umm-recalibrate-to``)."""
        from vla_mbpo_ros.core.world_model.evaluate import score_unseen_reward

        samples = self.world_model.reward_samples(episodes, dataclasses.replace(self.data_config, yes_oversample=1))
        if not len(samples):
            return {}
        scores = score_unseen_reward(self.world_model, samples, self.args.umm_recalibrate_to)
        return {"reward_precision": scores["precision"], "reward_recall": scores["recall"],
                "reward_auroc": scores["auroc"], "reward_threshold": self.world_model.config.reward_threshold}

    def imagination_check(self, episodes: list[Episode]) -> dict[str, float]:
        """Imagined branches (current policy, Flow-SDE) from these episodes' start states, replayed in the sim."""
        from vla_mbpo_ros.core.rl.rollout import branched_rollout, replay_chunks, success_agreement

        sampler = StartStateSampler(self.args.chunk_size)
        sampler.add_episodes(episodes)
        starts = sampler.sample(self.args.imagination_checks, np.random.default_rng(self.args.seed + 7))
        buffer = branched_rollout(self.policy, self.world_model, starts, self.args.num_chunks,
                                  torch.Generator().manual_seed(self.args.seed + 7))
        replayed = replay_chunks(self.replay_world, starts, buffer.actions)
        agreement = success_agreement(buffer.rewards.numpy(), replayed)
        # The first chunk starts from real views: its agreement is the reward's alone, later chunks add the
        # generated views' errors.
        first = success_agreement(buffer.rewards.numpy()[:, :1], replayed[:, :1])
        return {"imagined_agreement": agreement["agreement"], "imagined_false_success": agreement["false_success_rate"],
                "imagined_missed_success": agreement["missed_success_rate"],
                "check_imagined_success": agreement["imagined_success"], "check_true_success": agreement["true_success"],
                "first_chunk_agreement": first["agreement"], "first_chunk_false_success": first["false_success_rate"]}


def make_method(name: str, policy: CompactFlowVLA, sim: So101Sim, demos: list[Episode],
                args: argparse.Namespace, anchor: BCArrays | None = None) -> Method:
    if name == "ppo":
        return ModelFreePPO(name, policy, sim, args, anchor)
    if name == "mbpo_sim":
        return BranchedMBPO(name, policy, sim, demos, args, world_model=sim_world_model(sim, args), anchor=anchor)
    return UMMBranchedMBPO(name, policy, sim, demos, args, anchor)


# ----------------------------------------------------------------------------------------------- main
def evaluate(policy: CompactFlowVLA, sim: So101Sim, args: argparse.Namespace, episodes: int) -> np.ndarray:
    """Deterministic successes (0/1 per episode) from the evaluation start states (the same for every
    policy of every seed: sim seeds EVAL_SEED_BASE + eval_offset + i)."""
    start = EVAL_SEED_BASE + args.eval_offset
    result = evaluate_policy(policy, sim, range(start, start + episodes), episode_config(args, record=False))
    return result.successes.astype(np.int8)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def demonstrations(sim: So101Sim, args: argparse.Namespace) -> list[Episode]:
    """The successful scripted-expert demos (the same for every seed), cached in --demo-cache: the
    rendering is a minute or more of every run."""
    config = episode_config(args, record=True)
    key = (f"demos{args.demos}_render{args.render_size}_steps{args.max_steps}_hold{args.control_steps_per_action}"
           f"_settle{args.settle_frames}")
    path = Path(args.demo_cache).expanduser() / f"{key}.npz" if args.demo_cache else None
    if path is not None and path.exists():
        with np.load(path) as data:
            meta = json.loads(str(data["meta"]))
            return [Episode(views={v: data[f"{i}/{v}"] for v in m["views"]}, states=data[f"{i}/states"],
                            actions=data[f"{i}/actions"], sim_states=data[f"{i}/sim_states"],
                            **{k: m[k] for k in ("instruction", "success", "source", "seed", "steps_to_success",
                                                 "control_steps")})
                    for i, m in enumerate(meta)]
    demos = expert_episodes(sim, range(DEMO_SEED_BASE, DEMO_SEED_BASE + args.demos), config, successful_only=True)
    if path is not None:
        arrays: dict[str, np.ndarray] = {}
        meta = []
        for i, demo in enumerate(demos):
            arrays.update({f"{i}/{v}": frames for v, frames in demo.views.items()})
            arrays.update({f"{i}/states": demo.states, f"{i}/actions": demo.actions, f"{i}/sim_states": demo.sim_states})
            meta.append({"views": list(demo.views), "instruction": demo.instruction, "success": demo.success,
                         "source": demo.source, "seed": demo.seed, "steps_to_success": demo.steps_to_success,
                         "control_steps": demo.control_steps})
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.stem}.{os.getpid()}.npz")  # parallel seeds: rename is atomic
        np.savez(partial, meta=np.array(json.dumps(meta)), **arrays)
        partial.rename(path)
    return demos


def run_seed(args: argparse.Namespace) -> dict[str, Any]:
    """One seed in this process: demos, BC, every method from the BC weights, final evaluations."""
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    sim = So101Sim(SimConfig(image_size=(args.render_size, args.render_size)))
    results: dict[str, Any] = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                               "methods": {}}

    demos, seconds = timed(lambda: demonstrations(sim, args))
    print(f"demos: {len(demos)}/{args.demos} expert successes, {sum(len(d) for d in demos)} frames "
          f"({seconds:.0f} s)", flush=True)
    if args.load_bc is not None:
        args.load_bc = Path(str(args.load_bc).replace("{seed}", str(args.seed)))
        policy = CompactFlowVLA.load(args.load_bc)
        if policy.config != build_policy(args).config:
            raise ValueError(f"--load-bc: {args.load_bc} was trained with another policy config")
        losses, seconds = [], 0.0
        print(f"BC: loaded {args.load_bc}")
    else:
        policy = build_policy(args)
        losses, seconds = timed(lambda: train_bc(policy, BCArrays.from_episodes(demos, args.chunk_size), bc_config(args)))
        policy.save(args.out / "bc_policy")
    bc, eval_seconds = timed(lambda: evaluate(policy, sim, args, args.eval_episodes))
    results.update(bc_success=float(bc.mean()), bc_successes=bc.tolist(), bc_seconds=seconds,
                   **({"bc_loss_last": float(np.mean(losses[-50:]))} if losses else {}))
    trained = f"{args.bc_steps} steps ({seconds:.0f} s), final loss {results['bc_loss_last']:.4f}" if losses else "loaded"
    print(f"BC: {trained}; success {100 * bc.mean():.1f}% over {args.eval_episodes} eval episodes "
          f"({eval_seconds:.0f} s)", flush=True)
    bc_state = copy.deepcopy(policy.state_dict())
    anchor = BCArrays.from_episodes(demos, args.chunk_size) if args.bc_anchor > 0 else None

    for name in args.methods:
        method_started = time.perf_counter()
        method_policy = build_policy(args)
        method_policy.load_state_dict(bc_state)
        method_policy.eval()
        try:
            method = make_method(name, method_policy, sim, demos, args, anchor)
        except Exception as error:  # noqa: BLE001 - the UMM is optional for this bench; say why it is missing
            if name != "mbpo_umm":
                raise
            reason = f"{type(error).__name__}: {error}"
            results["methods"][name] = {"skipped": reason}
            print(f"{name}: skipped: {reason}", flush=True)
            continue
        record: dict[str, Any] = {"iterations": [], "setup_seconds": time.perf_counter() - method_started}
        if isinstance(method, UMMBranchedMBPO):
            record["world_model_fit"] = method.wm_log
        for iteration in range(args.iterations):
            stats, train_seconds = timed(lambda: method.iteration(iteration))
            last = iteration == args.iterations - 1
            episodes = args.eval_episodes if last else args.curve_eval_episodes
            successes, eval_seconds = timed(lambda: evaluate(method_policy, sim, args, episodes) if episodes
                                            else np.zeros(0, dtype=np.int8))
            success = float(successes.mean()) if len(successes) else float("nan")
            row = {"iteration": iteration + 1, "real_episodes": method.real_episodes_used, "success": success,
                   "eval_episodes": int(len(successes)), "train_seconds": train_seconds,
                   "eval_seconds": eval_seconds, **stats}
            record["iterations"].append(row)
            if last:
                record["final_successes"] = successes.tolist()
            extra = ", ".join(f"{k} {v:.3g}" for k, v in stats.items())
            print(f"{name:9s} it {iteration + 1}: real episodes {method.real_episodes_used:3d}, "
                  f"success {100 * success:5.1f}% over {len(successes)} (BC {100 * bc.mean():.1f}%) [{extra}] "
                  f"({train_seconds:.0f} s + eval {eval_seconds:.0f} s)", flush=True)
        record["seconds"] = time.perf_counter() - method_started
        results["methods"][name] = record
        (args.out / "results.json").write_text(json.dumps(results, indent=2))

    results["total_seconds"] = time.perf_counter() - started
    results["final_success"] = {name: float(np.mean(r["final_successes"])) for name, r in results["methods"].items()
                                if "final_successes" in r}
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out / 'results.json'} ({results['total_seconds'] / 60:.1f} min)")
    print(f"learning_bench: seed={args.seed} bc={100 * results['bc_success']:.1f} "
          + " ".join(f"{name}={100 * s:.1f}" for name, s in results["final_success"].items()))
    sim.close()
    return results


def run_seeds(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    """One worker process per seed (``--jobs`` at once), then the aggregate over seeds."""
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if not seeds:
        raise SystemExit("--seeds: name at least one seed")
    jobs = args.jobs or min(len(seeds), os.cpu_count() or 1)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    pending, running, failed = list(seeds), {}, []
    while pending or running:
        while pending and len(running) < jobs:
            seed = pending.pop(0)
            out = args.out / f"seed_{seed}"
            log = open(args.out / f"seed_{seed}.log", "w")  # noqa: SIM115 - closed when the process ends
            command = [sys.executable, __file__, *argv, "--seed", str(seed), "--out", str(out)]
            running[seed] = (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT), log)
            print(f"seed {seed}: started (log {args.out / f'seed_{seed}.log'})", flush=True)
        time.sleep(2)
        for seed, (process, log) in list(running.items()):
            if process.poll() is not None:
                log.close()
                del running[seed]
                print(f"seed {seed}: exit {process.returncode} ({(time.perf_counter() - started) / 60:.1f} min)",
                      flush=True)
                if process.returncode:
                    failed.append(seed)
    if failed:
        raise SystemExit(f"seeds {failed} failed: see their logs in {args.out}")
    per_seed = {seed: json.loads((args.out / f"seed_{seed}" / "results.json").read_text()) for seed in seeds}
    return write_summary(per_seed, args.out, time.perf_counter() - started)


def combine_runs(runs: list[Path], out: Path) -> dict[str, Any]:
    """One summary of the seeds of several runs. A seed's methods are merged only where every run evaluated
    the same BC policy on the same start states (identical per-episode BC successes): otherwise the paired
    differences would compare different starts."""
    per_seed: dict[int, dict[str, Any]] = {}
    for run in runs:
        for path in sorted(run.glob("seed_*/results.json")):
            seed, result = int(path.parent.name.removeprefix("seed_")), json.loads(path.read_text())
            if seed not in per_seed:
                per_seed[seed] = result
            elif result["bc_successes"] != per_seed[seed]["bc_successes"]:
                raise SystemExit(f"--combine: seed {seed}: {path}'s BC evaluation differs from an earlier run's "
                                 "(another BC policy or other start states): not comparable")
            else:
                per_seed[seed]["methods"].update(result["methods"])
    if not per_seed:
        raise SystemExit(f"--combine: no seed_*/results.json in {[str(r) for r in runs]}")
    out.mkdir(parents=True, exist_ok=True)
    return write_summary(per_seed, out, wall_seconds=float("nan"))


def write_summary(per_seed: dict[int, dict[str, Any]], out: Path, wall_seconds: float) -> dict[str, Any]:
    """summary.json, success.png and the printed table; the last line states the figures."""
    seeds = sorted(per_seed)
    summary = aggregate(per_seed)
    summary["wall_seconds"] = wall_seconds
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    plot(per_seed, summary, out / "success.png")
    print_summary(per_seed, summary)
    took = f" ({wall_seconds / 60:.1f} min)" if math.isfinite(wall_seconds) else ""
    print(f"wrote {out / 'summary.json'} and {out / 'success.png'}{took}")
    print(summary_line(seeds, summary))
    return summary


def aggregate(per_seed: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """IQM over seeds with a hierarchical bootstrap 95 % interval for BC and every method; each method's
    paired difference to BC on the same start states."""
    seeds = sorted(per_seed)
    bc = np.array([per_seed[s]["bc_successes"] for s in seeds])
    summary: dict[str, Any] = {"seeds": seeds, "eval_episodes": int(bc.shape[1]), "bc": vars(iqm_interval(bc)),
                               "per_seed": {str(s): {"bc": per_seed[s]["bc_success"]} for s in seeds}}
    for name in METHODS:
        if not all("final_successes" in per_seed[s]["methods"].get(name, {}) for s in seeds):
            continue
        final = np.array([per_seed[s]["methods"][name]["final_successes"] for s in seeds])
        summary[name] = vars(iqm_interval(final))
        summary[f"{name}_minus_bc"] = vars(paired_difference(final, bc))
        for s, row in zip(seeds, final):
            summary["per_seed"][str(s)][name] = float(row.mean())
    if reward := umm_reward_figures(per_seed):
        summary["mbpo_umm_reward"] = reward
    return summary


def umm_reward_figures(per_seed: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """The UMM reward against the issue's goals, over every iteration of every seed: on each iteration's new
    real episodes (not yet trained on), precision >= 0.9 and recall >= 0.6, and AUROC; on imagined branches,
    the agreement of imagined successes with the sim's replay of the same chunks."""
    rows = [row for s in sorted(per_seed) for row in per_seed[s]["methods"].get("mbpo_umm", {}).get("iterations", [])]
    measured = [r for r in rows if "reward_precision" in r]
    if not measured:
        return {}

    def values(key: str) -> list[float]:
        return [float(r[key]) for r in rows if key in r and math.isfinite(r[key])]

    return {"iterations": len(measured),
            "reward_goal_met": sum(r["reward_precision"] >= 0.9 and r["reward_recall"] >= 0.6 for r in measured),
            "reward_auroc": values("reward_auroc"), "imagined_agreement": values("imagined_agreement"),
            "imagined_success": values("check_imagined_success"), "replayed_success": values("check_true_success")}


def _estimate(summary: dict[str, Any], key: str) -> str:
    return Estimate(**summary[key]).text(digits=1) if key in summary else "n/a"


def print_summary(per_seed: dict[int, dict[str, Any]], summary: dict[str, Any]) -> None:
    episodes = summary["eval_episodes"]
    print(f"\nfinal success % over {episodes} evaluation episodes (same start states for every policy)")
    names = [n for n in METHODS if n in summary]
    print("  seed   " + " ".join(f"{n:>9s}" for n in ["bc", *names]))
    for seed, row in summary["per_seed"].items():
        print(f"  {seed:6s} " + " ".join(f"{100 * row[n]:9.1f}" for n in ["bc", *names]))
    print("  IQM over seeds [bootstrap 95 %]: " + ", ".join(f"{n} {_estimate(summary, n)}" for n in ["bc", *names]))
    for name in names:
        print(f"  {name} - BC (paired): {_estimate(summary, name + '_minus_bc')} points")
    if reward := summary.get("mbpo_umm_reward"):
        def spread(key: str) -> str:
            v = reward[key]
            return f"median {np.median(v):.2f} [{min(v):.2f}, {max(v):.2f}] over {len(v)}" if v else "n/a"

        print(f"  UMM reward on each iteration's new real episodes: precision >= 0.9 and recall >= 0.6 in "
              f"{reward['reward_goal_met']} of {reward['iterations']} iterations; AUROC {spread('reward_auroc')}")
        print(f"  imagined vs replayed branches: success agreement (both / either) {spread('imagined_agreement')}; imagined success "
              f"{spread('imagined_success')}, replayed {spread('replayed_success')}")


def summary_line(seeds: list[int], summary: dict[str, Any]) -> str:
    def point(key: str) -> str:
        return f"{100 * summary[key]['point']:.1f}" if key in summary else "n/a"

    return (f"learning_bench: seeds={','.join(map(str, seeds))} bc={point('bc')} ppo={point('ppo')} "
            f"mbpo_sim={point('mbpo_sim')} mbpo_umm={point('mbpo_umm')} "
            f"umm_minus_bc={_estimate(summary, 'mbpo_umm_minus_bc')}")


def plot(per_seed: dict[int, dict[str, Any]], summary: dict[str, Any], path: Path) -> None:
    """Final success per seed and method (bars, Wilson 95 % intervals) and the IQM over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["bc"] + [n for n in METHODS if n in summary]
    labels = {"bc": "BC only", **LABELS}
    seeds = summary["seeds"]
    episodes = summary["eval_episodes"]
    figure, axis = plt.subplots(figsize=(7.5, 4.2))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        rates = np.array([summary["per_seed"][str(s)][name] for s in seeds])
        bounds = np.array([wilson_interval(round(r * episodes), episodes) for r in rates])
        xs = np.arange(len(seeds) + 1) + (i - (len(names) - 1) / 2) * width
        estimate = summary[name]
        heights = np.append(100 * rates, 100 * estimate["point"])
        errors = np.stack([np.append(100 * (rates - bounds[:, 0]), 100 * (estimate["point"] - estimate["low"])),
                           np.append(100 * (bounds[:, 1] - rates), 100 * (estimate["high"] - estimate["point"]))])
        color = f"C{['bc', *METHODS].index(name)}"  # one colour per method whichever ran
        axis.bar(xs, heights, width, yerr=errors, capsize=2, label=labels[name], color=color)
    axis.set_xticks(np.arange(len(seeds) + 1), [f"seed {s}" for s in seeds] + ["IQM"])
    axis.set_ylabel(f"success over {episodes} eval episodes (%)")
    settings = per_seed[seeds[0]]["settings"]
    axis.set_title(f"SO-101 pick-cube: BC from {settings['demos']} demos, then "
                   f"{settings['iterations']} x {settings['real_episodes']} real episodes of RL")
    axis.set_ylim(0, 100)
    axis.grid(alpha=0.3, axis="y")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.combine:
        return combine_runs(args.combine, args.out)
    if args.seed is not None:
        return run_seed(args)
    # The workers get the same flags; the orchestrator's --out and --seeds are replaced per seed.
    return run_seeds(args, _without(argv, ("--out", "--seeds", "--jobs")))


def _without(argv: list[str], flags: tuple[str, ...]) -> list[str]:
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in flags:
            skip = True
            continue
        if any(arg.startswith(flag + "=") for flag in flags):
            continue
        kept.append(arg)
    return kept


if __name__ == "__main__":
    main()
