"""Scripted expert on the simulated SO-101: success rate, simulation speed, render speed.

    python bench/expert_bench.py --episodes 50

Runs seeded pick-cube episodes without rendering (sim seed = expert seed = episode index +
--seed-offset), then renders --render-frames camera frames at the configured resolution.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from vla_mbpo_ros.core.sim import ExpertConfig, ScriptedExpert, SimConfig, So101Sim

_DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "config" / "sim_robot.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--max-steps", type=int, default=300, help="control steps per episode")
    parser.add_argument("--seed-offset", type=int, default=0)
    parser.add_argument("--config", type=Path, default=_DEFAULT_CONFIG, help="sim YAML")
    parser.add_argument("--render-frames", type=int, default=30)
    parser.add_argument("--target-noise-std", type=float, default=0.0, help="rad")
    parser.add_argument("--random-fraction", type=float, default=0.0)
    args = parser.parse_args()

    config = SimConfig.from_yaml(args.config) if args.config.exists() else SimConfig()
    started = time.perf_counter()
    sim = So101Sim(config)
    build_s = time.perf_counter() - started
    expert = ScriptedExpert(sim, ExpertConfig(target_noise_std=args.target_noise_std,
                                              random_fraction=args.random_fraction,
                                              episode_steps=args.max_steps))

    successes, steps_to_success = 0, []
    control_steps, step_s, act_s = 0, 0.0, 0.0
    for episode in range(args.episodes):
        seed = args.seed_offset + episode
        sim.reset(seed=seed)
        expert.reset(seed=seed)
        for step in range(args.max_steps):
            t0 = time.perf_counter()
            target = expert.act(sim)
            t1 = time.perf_counter()
            sim.set_joint_targets(target)
            sim.step()
            t2 = time.perf_counter()
            act_s += t1 - t0
            step_s += t2 - t1
            control_steps += 1
            if sim.is_success():
                successes += 1
                steps_to_success.append(step + 1)
                break

    sim.reset(seed=args.seed_offset)
    expert.reset(seed=args.seed_offset)
    sim.render()  # GL context creation is not part of the per-frame cost
    frames, render_s = 0, 0.0
    while frames < args.render_frames:
        sim.set_joint_targets(expert.act(sim))
        sim.step()
        if sim.camera_frame_due():
            t0 = time.perf_counter()
            sim.render()
            render_s += time.perf_counter() - t0
            frames += 1

    physics_steps = control_steps * config.physics_substeps
    sim_seconds = control_steps * config.control_period
    h, w = config.image_size
    print(f"model build: {build_s:.1f} s (first in process)")
    print(f"expert success: {successes}/{args.episodes} = {successes / max(args.episodes, 1):.3f}"
          + (f", mean {np.mean(steps_to_success):.0f} control steps "
             f"({np.mean(steps_to_success) * config.control_period:.1f} s sim) to success"
             if steps_to_success else ""))
    print(f"sim only: {control_steps / step_s:.0f} control steps/s = {physics_steps / step_s:.0f} physics steps/s "
          f"= {sim_seconds / step_s:.1f}x real time ({config.control_fps:g} Hz control, "
          f"{config.physics_substeps} substeps)")
    print(f"sim + expert: {control_steps / (step_s + act_s):.0f} control steps/s "
          f"(expert {1e3 * act_s / control_steps:.2f} ms per act)")
    print(f"render: {frames / render_s:.1f} frames/s of {len(config.views)} views at {h}x{w} "
          f"({1e3 * render_s / frames:.1f} ms per frame; camera_fps {config.camera_fps:g} needs "
          f"{1e3 / config.camera_fps:.0f} ms of sim time per frame)")


if __name__ == "__main__":
    main()
