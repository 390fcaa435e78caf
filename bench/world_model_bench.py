"""UMM world model benchmarks (not part of the test run).

(a) Batched generation: one ``step`` over B branches vs B single-branch ``step`` calls, same model;
    prints the throughput ratio (goal >= 5x at B = 16).
(b) IVD ablation on simulated episodes: scripted-expert SO-101 pick episodes from the MuJoCo sim, one VQ
    tokenizer fitted once and shared, then two world models trained identically except for ``ivd``;
    prints per-view PSNR/SSIM on held-out episodes next to two references: copying the current frame
    (no model) and the VQ reconstruction of the real target (the best any model can do with this tokenizer).

    .venv/bin/python bench/world_model_bench.py [--part a|b|all] [--steps 600] [--out /tmp/wm_bench]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable without scripts/env.sh, like the others
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
import torch

from vla_mbpo_ros.core.data.episode import Episode
from vla_mbpo_ros.core.world_model.codec import ActionStats
from vla_mbpo_ros.core.world_model.configuration import TinyArchConfig, WorldModelConfig
from vla_mbpo_ros.core.world_model.data import DataConfig, action_stats, build_samples
from vla_mbpo_ros.core.world_model.pretrain import load_pretrain_config
from vla_mbpo_ros.core.world_model.evaluate import EvalConfig, evaluate_dynamics, psnr, render_examples, ssim
from vla_mbpo_ros.core.world_model.train import TrainConfig, fit_vq_tokenizer, train_world_model
from vla_mbpo_ros.core.world_model.umm import UMMWorldModel

VIEWS = ("head", "wrist")
INSTRUCTION = "pick up the cube"


def bench_batched(batch: int, image_size: int, chunk: int, repeats: int, chunks_per_branch: int = 2,
                  arch: TinyArchConfig | None = None) -> dict:
    """B branches imagined ``chunks_per_branch`` chunks deep, as RL's branched rollouts do: one ``step`` per
    chunk over all B, vs the same rollouts one branch at a time (same model)."""
    stats = ActionStats(low=-np.ones(6), high=np.ones(6))
    model = UMMWorldModel.tiny(VIEWS, stats, image_size, seed=0, arch=arch, instructions=[INSTRUCTION])
    rng = np.random.default_rng(0)
    views = {v: rng.integers(0, 255, (batch, image_size, image_size, 3), dtype=np.uint8) for v in VIEWS}
    chunks = rng.uniform(-1, 1, (chunks_per_branch, batch, chunk, 6)).astype(np.float32)
    instructions = [INSTRUCTION] * batch

    def rollout(rows: slice) -> None:
        current = {v: x[rows] for v, x in views.items()}
        for c in range(chunks_per_branch):
            current = model.step(current, chunks[c, rows], instructions[rows])[0]

    rollout(slice(0, 1))  # warm-up
    batched, sequential = [], []
    for _ in range(repeats):
        model.forget_generated()
        began = time.perf_counter()
        rollout(slice(0, batch))
        batched.append(time.perf_counter() - began)
        model.forget_generated()
        began = time.perf_counter()
        for b in range(batch):
            rollout(slice(b, b + 1))
        sequential.append(time.perf_counter() - began)
    t_batched, t_sequential = float(np.median(batched)), float(np.median(sequential))
    return {
        "branches": batch,
        "chunks_per_branch": chunks_per_branch,
        "image_tokens_per_view": model.core.n_vq,
        "parameters": model.num_parameters(),
        "batched_s": t_batched,
        "sequential_s": t_sequential,
        "batched_branches_per_s": batch / t_batched,
        "throughput_ratio": t_sequential / t_batched,
    }


def sim_episodes(count: int, length: int, image_size: int, seed: int) -> list[Episode]:
    """Scripted-expert pick episodes at 10 Hz (one action per frame); a third with noisy targets."""
    from vla_mbpo_ros.core.sim import ExpertConfig, ScriptedExpert, SimConfig, So101Sim

    sim = So101Sim(SimConfig(image_size=(image_size, image_size), control_fps=10.0, camera_fps=10.0, physics_substeps=48))
    episodes = []
    for index in range(count):
        noisy = index % 3 == 2
        expert = ScriptedExpert(sim, ExpertConfig(target_noise_std=0.08 if noisy else 0.01), seed=seed + index)
        sim.reset(seed=seed + index)
        frames = {v: [] for v in VIEWS}
        actions, success = [], False
        for _ in range(length):
            for v, image in sim.render(fresh=True).items():
                frames[v].append(image)
            action = expert.act(sim)
            sim.set_joint_targets(action)
            sim.step()
            actions.append(action.astype(np.float32))
            success = success or sim.is_success()
        episodes.append(Episode(views={v: np.stack(f) for v, f in frames.items()}, states=np.zeros((length, 0)),
                                actions=np.stack(actions), instruction=INSTRUCTION, success=success))
    sim.close()
    return episodes


def references(model: UMMWorldModel, dynamics, limit: int) -> dict:
    """PSNR/SSIM of copying the current frame and of the tokenizer's reconstruction of the target."""
    indices = np.unique(np.linspace(0, len(dynamics) - 1, min(limit, len(dynamics))).round().astype(int))
    items = [dynamics[int(i)] for i in indices]
    result = {}
    for v in VIEWS:
        current = np.stack([it["current"][v].numpy() for it in items])
        target = np.stack([it["next"][v].numpy() for it in items])
        with torch.no_grad():
            recon = model.core.vq_decode(model.core.vq_encode(torch.from_numpy(target))).cpu().numpy()
        result[v] = {
            "copy_current_psnr": float(psnr(current, target).mean()),
            "copy_current_ssim": float(ssim(current, target).mean()),
            "vq_reconstruction_psnr": float(psnr(recon, target).mean()),
            "vq_reconstruction_ssim": float(ssim(recon, target).mean()),
        }
    return result


ARCHITECTURES = {  # name: TinyArchConfig fields (image 32 px, the policy's view size in the learning bench)
    "16tok-h96-L2": dict(tokens_per_side=4, hidden_size=96, intermediate_size=192, num_layers=2),
    "16tok-h128-L3": dict(tokens_per_side=4, hidden_size=128, intermediate_size=256, num_layers=3),
    "16tok-h192-L4": dict(tokens_per_side=4, hidden_size=192, intermediate_size=384, num_layers=4, num_heads=6),
    "64tok-h128-L2": dict(tokens_per_side=8, hidden_size=128, intermediate_size=256, num_layers=2),
}


def bench_architectures(args) -> dict:
    """(c) The table the pretraining sizes are chosen from: every candidate fitted and trained for the same
    number of steps on the same play-corpus episodes, then scored on held-out ones; seconds per step give
    the steps a 30-minute pretraining affords."""
    from vla_mbpo_ros.core.data.reader import load_episodes
    from vla_mbpo_ros.core.world_model.pretrain import load_pretrain_config
    from vla_mbpo_ros.core.world_model.evaluate import reference_scores

    root = Path(args.corpus).expanduser()
    episodes = load_episodes(root, VIEWS, 32, "local/play", episodes=list(range(args.episodes + args.held_out)))
    train_eps, held_eps = episodes[: args.episodes], episodes[args.episodes :]
    data = DataConfig(chunk_size=args.chunk, reward_no_margin=0, yes_oversample=3)
    dynamics, reward = build_samples(train_eps, VIEWS, data)
    held_dynamics, _ = build_samples(held_eps, VIEWS, data)
    eval_config = EvalConfig(batch_size=16, max_samples=args.eval_samples)
    table = {}
    for name, fields in ARCHITECTURES.items():
        arch = TinyArchConfig(image_size=32, **fields)
        model = UMMWorldModel.tiny(VIEWS, action_stats(train_eps), 32, 0, arch=arch, instructions=[INSTRUCTION])
        config = TrainConfig(steps=args.steps, batch_size=8, reward_batch_size=8, lr=args.lr, warmup_steps=50,
                             vq_fit_steps=args.vq_steps, vq_fit_batch_size=32, answer_loss_weight=1.0, log_every=50)
        frames = np.concatenate([ep.views[v] for ep in train_eps for v in VIEWS])
        began = time.perf_counter()
        fit_vq_tokenizer(model.core, frames, config)
        vq_seconds = (time.perf_counter() - began) / args.vq_steps
        began = time.perf_counter()
        train_world_model(model, dynamics, reward, dataclasses.replace(config, vq_fit_steps=0), progress=False)
        step_seconds = (time.perf_counter() - began) / args.steps
        metrics = evaluate_dynamics(model, held_dynamics, eval_config)
        refs = reference_scores(model, held_dynamics, eval_config)
        table[name] = {"parameters": model.num_parameters(), "image_tokens_per_view": model.core.n_vq,
                       "vq_step_s": vq_seconds, "train_step_s": step_seconds,
                       "imagine_s_per_branch": metrics["seconds_per_branch"],
                       **{f"{v}_{k}": metrics[v][k] for v in VIEWS for k in ("psnr", "ssim")},
                       **{f"{v}_{k}": refs[v][k] for v in VIEWS for k in ("copy_psnr", "vq_psnr")}}
        row = table[name]
        print(f"(c) {name:14s} {row['parameters'] / 1e6:5.2f}M  vq {1e3 * vq_seconds:5.0f} ms/step  "
              f"train {1e3 * step_seconds:5.0f} ms/step  imagine {1e3 * row['imagine_s_per_branch']:5.1f} ms/branch  "
              + "  ".join(f"{v} {row[f'{v}_psnr']:.2f} (copy {row[f'{v}_copy_psnr']:.2f}, vq {row[f'{v}_vq_psnr']:.2f}) dB"
                          for v in VIEWS), flush=True)
    return table


def bench_ivd(args) -> dict:
    began = time.perf_counter()
    episodes = sim_episodes(args.episodes + args.held_out, args.length, args.image_size, seed=100)
    train_eps, held_eps = episodes[: args.episodes], episodes[args.episodes :]
    sim_seconds = time.perf_counter() - began
    data = DataConfig(chunk_size=args.chunk, reward_yes_window=5, reward_no_margin=10, yes_oversample=3)
    dynamics, reward = build_samples(train_eps, VIEWS, data)
    held_dynamics, _ = build_samples(held_eps, VIEWS, data)
    arch = TinyArchConfig(image_size=args.image_size, tokens_per_side=args.tokens_per_side)
    stats = action_stats(train_eps)
    train_config = TrainConfig(
        steps=args.steps, batch_size=8, reward_batch_size=8, lr=args.lr, warmup_steps=50, seed=0,
        vq_fit_steps=args.vq_steps, vq_fit_batch_size=16, log_every=50,
    )
    base = UMMWorldModel.tiny(VIEWS, stats, args.image_size, 0, arch=arch, instructions=[INSTRUCTION])
    frames = np.concatenate([ep.views[v] for ep in train_eps for v in VIEWS])
    began = time.perf_counter()
    vq_losses = fit_vq_tokenizer(base.core, frames, train_config, progress=True)
    vq_seconds = time.perf_counter() - began
    state = copy.deepcopy(base.core.janus.state_dict())
    out = Path(args.out)
    result = {
        "episodes": {"train": len(train_eps), "held_out": len(held_eps), "length": args.length,
                     "train_successes": int(sum(e.success for e in train_eps))},
        "dynamics_samples": {"train": len(dynamics), "held_out": len(held_dynamics)},
        "sim_seconds": sim_seconds,
        "vq_fit": {"steps": args.vq_steps, "seconds": vq_seconds, "recon_mse_last": float(np.mean(vq_losses[-20:]))},
        "references": references(base, held_dynamics, args.eval_samples),
        "parameters": base.num_parameters(),
    }
    for ivd in (True, False):
        config = WorldModelConfig(view_names=VIEWS, ivd=ivd)
        model = UMMWorldModel.tiny(VIEWS, stats, args.image_size, 0, arch=arch, config=config, instructions=[INSTRUCTION])
        model.core.janus.load_state_dict(state)
        began = time.perf_counter()
        history = train_world_model(model, dynamics, reward, dataclasses.replace(train_config, vq_fit_steps=0), progress=True)
        train_seconds = time.perf_counter() - began
        name = "ivd" if ivd else "no_ivd"
        metrics = evaluate_dynamics(model, held_dynamics, EvalConfig(batch_size=16, max_samples=args.eval_samples))
        render_examples(model, held_dynamics, out / f"{name}_real_vs_predicted.png", rows=8)
        result[name] = {
            "metrics": metrics,
            "train_seconds": train_seconds,
            "image_loss_first_last": [float(np.mean(history.image_loss[:25])), float(np.mean(history.image_loss[-25:]))],
            "answer_loss_first_last": [float(np.mean(history.answer_loss[:25])), float(np.mean(history.answer_loss[-25:]))]
            if history.answer_loss else [],
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("a", "b", "c", "all"), default="all")
    parser.add_argument("--corpus", default="~/.cache/vla_mbpo_ros/umm_sim/corpus",
                        help="(c) the play corpus (make world-model records it)")
    parser.add_argument("--branches", type=int, default=16)
    parser.add_argument("--arch-from", default="config/world_model_pretrain.yaml",
                        help="(a) take the tiny architecture from this pretraining config ('' = TinyArchConfig())")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--tokens-per-side", type=int, default=8)
    parser.add_argument("--chunk", type=int, default=10)
    parser.add_argument("--episodes", type=int, default=12)
    parser.add_argument("--held-out", type=int, default=3)
    parser.add_argument("--length", type=int, default=45)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--vq-steps", type=int, default=600)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eval-samples", type=int, default=48)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="/tmp/world_model_bench")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report, figures = {}, []  # figures: the last line
    if args.part in ("a", "all"):
        arch = load_pretrain_config(args.arch_from).tiny if args.arch_from else None
        report["batched_generation"] = bench_batched(args.branches, args.image_size, args.chunk, args.repeats,
                                                     arch=arch)
        r = report["batched_generation"]
        print(f"(a) B={r['branches']}, {r['chunks_per_branch']} chunks per branch: batched {r['batched_s']:.3f} s "
              f"({r['batched_branches_per_s']:.1f} branches/s), sequential {r['sequential_s']:.3f} s, "
              f"throughput ratio {r['throughput_ratio']:.1f}x (goal >= 5x)")
        figures.append(f"batched_ratio={r['throughput_ratio']:.1f}")
    if args.part in ("b", "all"):
        report["ivd_ablation"] = bench_ivd(args)
        r = report["ivd_ablation"]
        for name in ("ivd", "no_ivd"):
            m = r[name]["metrics"]
            print(f"(b) {name:6s}: " + ", ".join(
                f"{v} PSNR {m[v]['psnr']:.2f} dB SSIM {m[v]['ssim']:.3f}" for v in VIEWS))
        for v in VIEWS:
            ref = r["references"][v]
            print(f"(b) {v}: copy-current PSNR {ref['copy_current_psnr']:.2f} dB, "
                  f"VQ reconstruction PSNR {ref['vq_reconstruction_psnr']:.2f} dB")
            figures.append(f"{v}_psnr_ivd={r['ivd']['metrics'][v]['psnr']:.2f} {v}_psnr_no_ivd="
                           f"{r['no_ivd']['metrics'][v]['psnr']:.2f} {v}_psnr_copy={ref['copy_current_psnr']:.2f}")
    if args.part == "c":
        report["architectures"] = bench_architectures(args)
        best = max(report["architectures"].items(), key=lambda item: item[1]["head_psnr"])
        figures.append(f"best_head_psnr={best[1]['head_psnr']:.2f}:{best[0]}")
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print(f"report{' and side-by-side PNGs' if args.part in ('b', 'all') else ''} in {out}")
    print("world_model_bench: " + " ".join(figures))


if __name__ == "__main__":
    main()
