"""VLA-MBPO learning bench (issue #7): simulated SO-101 pick-cube, in-process (no ROS).

1. BC: the compact flow VLA (CompactFlowVLA) behaviour-cloned from --demos scripted-expert demonstrations
   (deliberately few, so it is imperfect).
2. From the BC weights, each method gets the same budget of real (simulator) episodes, --real-episodes per
   iteration for --iterations iterations, collected with the current policy's Flow-SDE samples:
     ppo       model-free PPO in the simulator: the real episodes themselves are the PPO data
               (MBPOTrainer, full_horizon mode, SimWorldModel, episode_budget);
     mbpo_sim  VLA-MBPO with the simulator as world model (upper bound): real episodes (and the demos) give
               chunk-aligned start states; imagined branched rollouts (n chunks) run in the simulator from
               their exact physics states and are not counted as real episodes;
     mbpo_umm  VLA-MBPO with the tiny UMM world model (the pretrained one of `make world-model`) finetuned on
               the demos + real episodes (dynamics and Yes/No reward), gated like the finetune loop: no policy
               phase in an iteration whose reward precision on the new, unseen episodes is below
               --umm-min-reward-precision; skipped with a reason if unavailable.
3. After every iteration: deterministic success over --eval-episodes seeded episodes (the same seeds for
   every method and iteration). Prints a table, writes curve.png and results.json into --out.

    python bench/learning_bench.py --out /tmp/learning_bench            # defaults: 29 min measured (3 runs on 2 cores)
    python bench/learning_bench.py --out /tmp/learning_bench --quick    # smoke run of every stage, 1.5 min

Seeds: demos use sim/expert seeds 0..demos-1, real episodes 10_000 + i, evaluation 1_000_000 + i; the
policy, BC and RL use --seed. One seed per run: with 50 evaluation episodes one success rate has a standard
error of up to 7 points, so read small differences as noise. Measured with the defaults (success %, BC then
iterations 1-5; the README has the full table):

    seed 0: BC 8,  PPO  6, VLA-MBPO sim 30, VLA-MBPO UMM 0
    seed 1: BC 6,  PPO 18, VLA-MBPO sim 36, VLA-MBPO UMM 6
    seed 2: BC 0,  PPO  2, VLA-MBPO sim 18, VLA-MBPO UMM 4

The policy acts at 10 Hz, the ROS graph's rate (30 Hz control, 10 fps dataset): each action is held for 3
control steps, so a k = 10 chunk is 1 s and the scripted pick about 3-4 chunks. (At 30 Hz the pick took ~10
chunks, no n = 2 branch from the grasp reached the lift, and no method beat BC.)

RL settings that differ from the paper's defaults (config/mbpo.yaml), for a 0.55 M-parameter policy instead of
a 3 B one: actor lr 3e-4 (paper 5e-6; 1e-4 barely moved this policy, 1e-3 collapsed it), critic lr 1e-3,
clip 0.2, 256 imagined samples per refill and 4 refills per iteration (2 refills gained less), 10 of the 20
updates per refill critic-only. n = 2 imagined chunks, as in the paper. The evaluated policy integrates 3
deterministic Euler steps from zero noise, the K that Flow-SDE optimises.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
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
    parser.add_argument("--seed", type=int, default=0, help="policy init, BC, RL sampling")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    task = parser.add_argument_group("task and budget")
    task.add_argument("--demos", type=int, default=20, help="scripted-expert demonstrations for BC")
    task.add_argument("--iterations", type=int, default=5)
    task.add_argument("--real-episodes", type=int, default=10, help="real (sim) episodes per iteration")
    task.add_argument("--eval-episodes", type=int, default=50)
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
    policy.add_argument("--bc-steps", type=int, default=2000)
    policy.add_argument("--bc-batch", type=int, default=32)
    policy.add_argument("--bc-lr", type=float, default=1e-3)
    policy.add_argument("--load-bc", type=Path, default=None,
                        help="BC checkpoint to start from instead of training (e.g. OUT/bc_policy of an earlier run)")
    rl = parser.add_argument_group("RL (shared by all methods)")
    rl.add_argument("--actor-lr", type=float, default=3e-4)
    rl.add_argument("--critic-lr", type=float, default=1e-3)
    rl.add_argument("--clip", type=float, default=0.2, help="PPO ratio clip (both sides)")
    rl.add_argument("--update-to-data", type=int, default=20, help="PPO steps per refill")
    rl.add_argument("--minibatch", type=int, default=256)
    rl.add_argument("--critic-warmup", type=int, default=10, help="critic-only steps after each refill")
    rl.add_argument("--recompute-every", type=int, default=5)
    rl.add_argument("--num-chunks", type=int, default=2, help="n, imagined chunks per branch (MBPO)")
    rl.add_argument("--samples-per-refill", type=int, default=256, help="imagined transitions per refill (MBPO)")
    rl.add_argument("--refills", type=int, default=4, help="MBPO refills (+ PPO phases) per iteration")
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
    umm.add_argument("--umm-min-reward-precision", type=float, default=0.9,
                     help="the finetune loop's reward gate (config/finetune_sim.yaml): no policy phase in an "
                          "iteration whose held-out reward precision is lower (0 = off)")
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


def mbpo_config(args: argparse.Namespace, mode: str) -> MBPOConfig:
    ppo = PPOConfig(clip_low=args.clip, clip_high=args.clip, actor_lr=args.actor_lr, critic_lr=args.critic_lr)
    common = dict(update_to_data=args.update_to_data, minibatch_size=args.minibatch, seed=args.seed,
                  critic_warmup_updates=args.critic_warmup, recompute_every=args.recompute_every, ppo=ppo)
    if mode == "full_horizon":
        horizon = math.ceil(args.max_steps / (args.chunk_size * args.control_steps_per_action))
        return MBPOConfig(rollout_mode="full_horizon", full_horizon_chunks=horizon, num_iterations=1,
                          samples_per_refill=args.real_episodes * horizon, rollout_batch_size=64,
                          episode_budget=args.real_episodes * args.iterations, validation_starts=0, **common)
    return MBPOConfig(rollout_mode="branched", num_chunks=args.num_chunks, num_iterations=args.refills,
                      samples_per_refill=args.samples_per_refill, rollout_batch_size=64,
                      validation_starts=args.validation_starts, validation_chunks=args.num_chunks, **common)


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
    for key in ("actor_loss", "approx_kl", "clip_fraction"):
        if updated:
            stats[key] = float(np.mean([h[key] for h in updated]))
    return stats


class ModelFreePPO(Method):
    """PPO on the real episodes themselves: full-horizon Flow-SDE episodes in the simulator."""

    def __init__(self, name: str, policy: CompactFlowVLA, sim: So101Sim, args: argparse.Namespace) -> None:
        super().__init__(name, policy, sim, args)
        self.trainer = MBPOTrainer(policy, sim_world_model(sim, args), StartStateSampler(args.chunk_size),
                                   mbpo_config(args, "full_horizon"))

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
                 args: argparse.Namespace, world_model: Any) -> None:
        super().__init__(name, policy, sim, args)
        self.sampler = StartStateSampler(args.chunk_size)
        self.sampler.add_episodes(demos)
        self.trainer = MBPOTrainer(policy, world_model, self.sampler, mbpo_config(args, "branched"))

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
        result = self.trainer.train()
        return {"real_success": real_success,
                "imagined_success": float(np.mean([h["imagined_success"] for h in result["history"]])),
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
                 args: argparse.Namespace) -> None:
        from vla_mbpo_ros.core.world_model.configuration import TinyArchConfig
        from vla_mbpo_ros.core.world_model.data import DataConfig, action_stats
        from vla_mbpo_ros.core.world_model.umm import UMMWorldModel

        self.data_config = DataConfig(chunk_size=args.chunk_size, yes_oversample=3)
        self.wm_episodes = list(demos)
        self.wm_log: list[dict[str, float]] = []
        if args.umm_pretrained:
            from vla_mbpo_ros.core.world_model.pretrain import verify_pretrained

            directory = Path(args.umm_pretrained).expanduser()
            verify_pretrained(directory)  # FileNotFoundError (-> skipped, with the reason) until built
            self.world_model = UMMWorldModel.from_pretrained(directory)
            vq_steps = 0
        else:
            self.world_model = UMMWorldModel.tiny(
                ("head", "wrist"), action_stats(self.wm_episodes), args.umm_image_size, seed=args.seed,
                arch=TinyArchConfig(image_size=args.umm_image_size), instructions=[EpisodeConfig().instruction])
            vq_steps = args.umm_vq_steps
        self._fit(args, args.umm_first_steps, vq_steps=vq_steps, seed=args.seed)
        super().__init__(name, policy, sim, demos, args, world_model=self.world_model)
        self.replay_world = sim_world_model(sim, args)

    def _fit(self, args: argparse.Namespace, steps: int, vq_steps: int, seed: int) -> None:
        from vla_mbpo_ros.core.world_model.data import build_samples
        from vla_mbpo_ros.core.world_model.train import TrainConfig, train_world_model

        dynamics, reward = build_samples(self.wm_episodes, self.world_model.view_names, self.data_config)
        config = TrainConfig(steps=steps, batch_size=8, reward_batch_size=8, lr=args.umm_lr, warmup_steps=20,
                             vq_fit_steps=vq_steps, vq_fit_batch_size=16, seed=seed, log_every=max(1, steps),
                             answer_loss_weight=args.umm_answer_weight)
        history, seconds = timed(lambda: train_world_model(self.world_model, dynamics, reward, config, progress=False))
        self.wm_log.append({"steps": steps, "seconds": seconds,
                            "image_loss_last": float(np.mean(history.image_loss[-20:])),
                            "answer_loss_last": float(np.mean(history.answer_loss[-20:])) if history.answer_loss
                            else float("nan")})

    def learn_from(self, episodes: list[Episode], iteration: int) -> dict[str, float]:
        held_out = {**self.reward_scores(episodes), **self.imagination_check(episodes)}
        super().learn_from(episodes, iteration)
        self.wm_episodes += episodes
        self._fit(self.args, self.args.umm_steps, vq_steps=0, seed=self.args.seed + 1 + iteration)
        return {**held_out, "wm_image_loss": self.wm_log[-1]["image_loss_last"]}

    def trusts_world_model(self, stats: dict[str, float]) -> bool:
        """The finetune loop's gate (``world_model.min_reward_precision``) on the precision just measured on
        episodes the UMM had not been trained on."""
        from vla_mbpo_ros.core.loop.pipeline import reward_gate

        measured = {"held_out_reward_precision": stats["reward_precision"]} if "reward_precision" in stats else {}
        return reward_gate(measured, self.args.umm_min_reward_precision)[0]

    def reward_scores(self, episodes: list[Episode]) -> dict[str, float]:
        """Precision and recall of the UMM's Yes on these (not yet trained on) episodes' labelled frames."""
        from vla_mbpo_ros.core.world_model.data import RewardSamples
        from vla_mbpo_ros.core.world_model.evaluate import classification_scores

        samples = RewardSamples(episodes, "head", dataclasses.replace(self.data_config, yes_oversample=1))
        if not len(samples):
            return {}
        items = [samples[i] for i in range(len(samples))]
        predicted = self.world_model.reward(np.stack([it["image"].numpy() for it in items]),
                                            [it["instruction"] for it in items]) > 0.5
        scores = classification_scores(predicted, samples.labels)
        return {"reward_precision": scores["precision"], "reward_recall": scores["recall"]}

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
        return {"imagined_false_success": agreement["false_success_rate"],
                "imagined_missed_success": agreement["missed_success_rate"],
                "check_imagined_success": agreement["imagined_success"], "check_true_success": agreement["true_success"]}


def make_method(name: str, policy: CompactFlowVLA, sim: So101Sim, demos: list[Episode],
                args: argparse.Namespace) -> Method:
    if name == "ppo":
        return ModelFreePPO(name, policy, sim, args)
    if name == "mbpo_sim":
        return BranchedMBPO(name, policy, sim, demos, args, world_model=sim_world_model(sim, args))
    return UMMBranchedMBPO(name, policy, sim, demos, args)


# ----------------------------------------------------------------------------------------------- main
def evaluate(policy: CompactFlowVLA, sim: So101Sim, args: argparse.Namespace) -> float:
    seeds = range(EVAL_SEED_BASE, EVAL_SEED_BASE + args.eval_episodes)
    return evaluate_policy(policy, sim, seeds, episode_config(args, record=False)).success_rate


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.5, 4.2))
    bc = results["bc_success"]
    highest = 100 * bc
    for name, record in results["methods"].items():
        if "skipped" in record:
            continue
        xs = [0] + [row["real_episodes"] for row in record["iterations"]]
        ys = [100 * bc] + [100 * row["success"] for row in record["iterations"]]
        highest = max(highest, *ys)
        axis.plot(xs, ys, marker="o", label=LABELS[name])
    axis.axhline(100 * bc, color="gray", linestyle="--", label="BC only")
    settings = results["settings"]
    axis.set_xlabel("real (sim) episodes used")
    axis.set_ylabel(f"success rate over {settings['eval_episodes']} eval episodes (%)")
    axis.set_title(f"SO-101 pick-cube: BC from {settings['demos']} demos, then RL (seed {settings['seed']})")
    axis.set_ylim(-2, min(102, highest + 15))
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    sim = So101Sim(SimConfig(image_size=(args.render_size, args.render_size)))
    results: dict[str, Any] = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                               "methods": {}}

    demos, seconds = timed(lambda: expert_episodes(
        sim, range(DEMO_SEED_BASE, DEMO_SEED_BASE + args.demos), episode_config(args, record=True),
        successful_only=True))
    print(f"demos: {len(demos)}/{args.demos} expert successes, {sum(len(d) for d in demos)} frames "
          f"({seconds:.0f} s)", flush=True)
    if args.load_bc is not None:
        policy = CompactFlowVLA.load(args.load_bc)
        if policy.config != build_policy(args).config:
            raise ValueError(f"--load-bc: {args.load_bc} was trained with another policy config")
        losses, seconds = [], 0.0
        print(f"BC: loaded {args.load_bc}")
    else:
        policy = build_policy(args)
        losses, seconds = timed(lambda: train_bc(policy, BCArrays.from_episodes(demos, args.chunk_size), BCConfig(
            steps=args.bc_steps, batch_size=args.bc_batch, learning_rate=args.bc_lr, seed=args.seed)))
        policy.save(args.out / "bc_policy")
    bc_success, eval_seconds = timed(lambda: evaluate(policy, sim, args))
    results.update(bc_success=bc_success, bc_seconds=seconds,
                   **({"bc_loss_last": float(np.mean(losses[-50:]))} if losses else {}))
    trained = f"{args.bc_steps} steps ({seconds:.0f} s), final loss {results['bc_loss_last']:.4f}" if losses else "loaded"
    print(f"BC: {trained}; "
          f"success {100 * bc_success:.0f}% over {args.eval_episodes} eval episodes ({eval_seconds:.0f} s)", flush=True)
    bc_state = copy.deepcopy(policy.state_dict())

    for name in args.methods:
        method_started = time.perf_counter()
        method_policy = build_policy(args)
        method_policy.load_state_dict(bc_state)
        method_policy.eval()
        try:
            method = make_method(name, method_policy, sim, demos, args)
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
            success, eval_seconds = timed(lambda: evaluate(method_policy, sim, args))
            row = {"iteration": iteration + 1, "real_episodes": method.real_episodes_used, "success": success,
                   "train_seconds": train_seconds, "eval_seconds": eval_seconds, **stats}
            record["iterations"].append(row)
            extra = ", ".join(f"{k} {v:.2f}" for k, v in stats.items())
            print(f"{name:9s} it {iteration + 1}: real episodes {method.real_episodes_used:3d}, "
                  f"success {100 * success:5.1f}% (BC {100 * bc_success:.1f}%) [{extra}] "
                  f"({train_seconds:.0f} s + eval {eval_seconds:.0f} s)", flush=True)
        record["seconds"] = time.perf_counter() - method_started
        results["methods"][name] = record
        (args.out / "results.json").write_text(json.dumps(results, indent=2))

    results["total_seconds"] = time.perf_counter() - started
    summarize(results)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    plot(results, args.out / "curve.png")
    print(f"wrote {args.out / 'curve.png'} and {args.out / 'results.json'} ({results['total_seconds'] / 60:.1f} min)")
    print(f"learning_bench: seed={args.seed} bc={100 * results['bc_success']:.0f} "
          + " ".join(f"{name}={100 * s:.0f}" for name, s in results["final_success"].items()))
    sim.close()
    return results


def summarize(results: dict[str, Any]) -> None:
    bc = results["bc_success"]
    print("\nsuccess rate (%) per iteration; iteration 0 = BC")
    for name, record in results["methods"].items():
        if "skipped" in record:
            print(f"  {name:9s} skipped: {record['skipped']}")
            continue
        curve = [bc] + [row["success"] for row in record["iterations"]]
        print(f"  {name:9s} " + " ".join(f"{100 * s:5.1f}" for s in curve))
    finals = {name: r["iterations"][-1]["success"] for name, r in results["methods"].items()
              if "skipped" not in r and r["iterations"]}
    results["final_success"] = finals
    for name in ("mbpo_sim", "mbpo_umm"):
        if name in finals:
            line = f"  {name} - BC = {100 * (finals[name] - bc):+.1f} points (goal >= +10)"
            if "ppo" in finals:
                line += f"; {name} - PPO = {100 * (finals[name] - finals['ppo']):+.1f} points (goal > 0)"
            print(line)


if __name__ == "__main__":
    main()
