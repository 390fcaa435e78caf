"""LeRobot reference row of the learning bench (issue #20): what users would train anyway.

The learning bench's demonstrations (the same successful scripted-expert episodes its BC learns from) are
written once as a LeRobotDataset by the package's recorder store, LeRobot's own ``lerobot-train`` trains a
policy on it (ACT by default; no pretrained backbone can be downloaded here, so the vision backbone starts
from random weights), and the saved checkpoint is loaded back with ``from_pretrained`` and its own processor
pipelines and evaluated deterministically on the learning bench's start states, through the same simulator
and episode settings (each predicted chunk executed open-loop, an action held 3 control steps).

    python bench/lerobot_reference.py --out /tmp/lerobot_ref --seeds 0,1,2
    python bench/lerobot_reference.py --out /tmp/lerobot_ref --seeds 3,4 --eval-offset 5000

Last line: ``lerobot_reference: policy=act seeds=... success=IQM[lo,hi] per_seed=...``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import learning_bench  # noqa: E402
from vla_mbpo_ros.core.data.episode_store import EpisodeStore  # noqa: E402
from vla_mbpo_ros.core.data.recording import Outcome, RecordedFrame, RecordingConfig  # noqa: E402
from vla_mbpo_ros.core.policy.base import ObsBatch  # noqa: E402
from vla_mbpo_ros.core.sim.env import SimConfig, So101Sim  # noqa: E402
from vla_mbpo_ros.core.util.success_stats import iqm_interval  # noqa: E402

DATASET_REPO_ID = "local/bench_demos"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("/tmp/lerobot_reference"))
    parser.add_argument("--seeds", default="0,1,2", help="training seeds (lerobot-train --seed)")
    parser.add_argument("--policy", default="act", help="LeRobot policy type (lerobot-train --policy.type)")
    parser.add_argument("--steps", type=int, default=1500, help="lerobot-train --steps")
    parser.add_argument("--batch-size", type=int, default=16, help="lerobot-train --batch_size")
    parser.add_argument("--train-arg", action="append", default=[], metavar="ARG",
                        help="extra lerobot-train argument, repeatable (e.g. --train-arg=--policy.dim_model=256)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--eval-episodes", type=int, default=200)
    parser.add_argument("--eval-offset", type=int, default=0, help="as learning_bench.py --eval-offset")
    # The learning bench's task settings (its defaults): the same demos and the same evaluation episodes.
    parser.add_argument("--demos", type=int, default=80)
    parser.add_argument("--demo-cache", default="~/.cache/vla_mbpo_ros/bench_demos")
    parser.add_argument("--render-size", type=int, default=96)
    parser.add_argument("--max-steps", type=int, default=150)
    parser.add_argument("--control-steps-per-action", type=int, default=3)
    parser.add_argument("--settle-frames", type=int, default=5)
    args = parser.parse_args(argv)
    args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    return args


# Small-model settings for this CPU: ACT's defaults (dim 512, 3200-wide feed-forward, 4 + 4 encoder layers,
# 100-step chunks: 51.6 M parameters) took ~1 s per batch-16 step here. The chunk matches the bench's policy:
# 10 actions (1 s), executed open-loop.
ACT_DEFAULTS = ("--policy.chunk_size=10", "--policy.n_action_steps=10", "--policy.dim_model=256",
                "--policy.n_heads=8", "--policy.dim_feedforward=1024", "--policy.n_encoder_layers=2",
                "--policy.n_vae_encoder_layers=2", "--policy.pretrained_backbone_weights=null",
                "--policy.optimizer_lr=1e-4", "--policy.optimizer_lr_backbone=1e-4")


def write_dataset(root: Path, args: argparse.Namespace, sim: So101Sim) -> Path:
    """The bench's demos as a LeRobotDataset (once; the store keeps what is complete)."""
    demos = learning_bench.demonstrations(sim, args)
    recording = RecordingConfig(repo_id=DATASET_REPO_ID, fps=round(sim.config.control_fps / args.control_steps_per_action),
                                views=tuple(demos[0].views), image_size=(args.render_size, args.render_size),
                                min_free_disk_mb=0.0)
    store = EpisodeStore(root, recording)
    try:
        for demo in demos[store.num_episodes:]:
            store.begin(demo.instruction, demo.source)
            period = 1.0 / recording.fps
            for t in range(len(demo)):
                store.add(RecordedFrame(images={v: frames[t] for v, frames in demo.views.items()},
                                        state=demo.states[t], action=demo.actions[t], obs_stamp=t * period,
                                        command_stamp=t * period, command_source="scripted_expert"))
            store.save(Outcome.SUCCESS if demo.success else Outcome.FAILURE)
    finally:
        store.close()
    print(f"dataset: {len(demos)} demos, {sum(len(d) for d in demos)} frames at {root}", flush=True)
    return root


def policy_arguments(args: argparse.Namespace) -> list[str]:
    """The policy's lerobot-train arguments: this CPU's ACT size for ACT, then the user's ``--train-arg``."""
    return [*(ACT_DEFAULTS if args.policy == "act" else ()), *args.train_arg]


def train(dataset: Path, out: Path, seed: int, args: argparse.Namespace) -> Path:
    """``lerobot-train`` in its own process; returns the last checkpoint's ``pretrained_model``."""
    checkpoint = out / "checkpoints" / "last" / "pretrained_model"
    if checkpoint.exists():
        return checkpoint
    command = [str(Path(sys.executable).with_name("lerobot-train")), f"--dataset.repo_id={DATASET_REPO_ID}",
               f"--dataset.root={dataset}", f"--policy.type={args.policy}", "--policy.device=cpu",
               "--policy.push_to_hub=false", *policy_arguments(args), f"--steps={args.steps}",
               f"--batch_size={args.batch_size}", f"--seed={seed}", "--num_workers=0", f"--save_freq={args.steps}",
               "--log_freq=250", "--wandb.enable=false", f"--output_dir={out}"]
    print("$ " + " ".join(command), flush=True)
    subprocess.run(command, check=True)
    return checkpoint


class LeRobotChunkPolicy:
    """A ``lerobot-train`` checkpoint as the simulator's ChunkPolicy: its processors normalise, it predicts a
    chunk, its post-processor unnormalises; ``n_action_steps`` actions are executed."""

    def __init__(self, path: Path) -> None:
        from lerobot.configs.policies import PreTrainedConfig
        from lerobot.policies.factory import get_policy_class, make_pre_post_processors

        config = PreTrainedConfig.from_pretrained(path)
        config.device = "cpu"
        self.policy = get_policy_class(config.type).from_pretrained(path, config=config)
        self.policy.eval()
        self.preprocessor, self.postprocessor = make_pre_post_processors(config, pretrained_path=str(path))
        self.steps = config.n_action_steps

    @torch.no_grad()
    def predict_chunks(self, batch: ObsBatch) -> np.ndarray:
        raw: dict[str, Any] = {f"observation.images.{name}": torch.from_numpy(np.ascontiguousarray(frames))
                               .permute(0, 3, 1, 2).float() / 255.0 for name, frames in batch.views.items()}
        raw["observation.state"] = torch.from_numpy(np.asarray(batch.states, dtype=np.float32))
        raw["task"] = list(batch.instructions)
        chunk = self.policy.predict_action_chunk(self.preprocessor(raw))[:, : self.steps]
        return self.postprocessor(chunk).numpy()


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    sim = So101Sim(SimConfig(image_size=(args.render_size, args.render_size)))
    dataset = write_dataset(args.out / "dataset", args, sim)
    per_seed: dict[int, dict[str, Any]] = {}
    for seed in args.seeds:
        started = time.perf_counter()
        checkpoint = train(dataset, args.out / f"seed_{seed}", seed, args)
        trained = time.perf_counter() - started
        policy = LeRobotChunkPolicy(checkpoint)
        start = learning_bench.EVAL_SEED_BASE + args.eval_offset
        result = learning_bench.evaluate_policy(policy, sim, range(start, start + args.eval_episodes),
                                                learning_bench.episode_config(args, record=False))
        successes = result.successes.astype(np.int8)
        per_seed[seed] = {"success": float(successes.mean()), "successes": successes.tolist(),
                          "train_seconds": trained, "checkpoint": str(checkpoint)}
        print(f"{args.policy} seed {seed}: success {100 * successes.mean():.1f}% over {len(successes)} episodes "
              f"(train + eval {(time.perf_counter() - started) / 60:.1f} min)", flush=True)
    sim.close()
    estimate = iqm_interval(np.array([r["successes"] for r in per_seed.values()]))
    summary = {"policy": args.policy, "steps": args.steps, "batch_size": args.batch_size,
               "train_args": policy_arguments(args),
               "eval_offset": args.eval_offset, "per_seed": per_seed, "iqm": vars(estimate)}
    (args.out / f"summary_offset{args.eval_offset}.json").write_text(json.dumps(summary, indent=2))
    print(f"lerobot_reference: policy={args.policy} seeds={','.join(map(str, per_seed))} "
          f"success={estimate.text(digits=1)} per_seed="
          + "/".join(f"{100 * r['success']:.1f}" for r in per_seed.values()))
    return summary


if __name__ == "__main__":
    run(parse_args())
