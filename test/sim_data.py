"""Recorded sim episodes for tests: the MuJoCo SO-101 driven by the scripted expert, written with
the recorder's own crash-safe store into a real LeRobotDataset (no ROS needed)."""

from __future__ import annotations

from pathlib import Path

from vla_mbpo_ros.core.data.episode_store import EpisodeStore
from vla_mbpo_ros.core.data.recording import Outcome, RecordedFrame, RecordingConfig
from vla_mbpo_ros.core.sim import SimConfig, So101Sim
from vla_mbpo_ros.core.sim.expert import ExpertConfig, ScriptedExpert

IMAGE = (32, 32)


def record_sim_episodes(root: Path, seeds, noisy_after: int = 2, codec: str = "h264") -> None:
    """Scripted-expert episodes (the later ones noisy, so some fail) at 10 fps, 30 Hz control."""
    sim = So101Sim(SimConfig(image_size=IMAGE, camera_fps=10.0, control_fps=30.0))
    store = EpisodeStore(root, RecordingConfig(image_size=IMAGE, fps=10, min_free_disk_mb=0.0, video_codec=codec))
    for i, seed in enumerate(seeds):
        sim.reset(seed)
        noise = 0.15 if i >= noisy_after else 0.0
        expert = ScriptedExpert(sim, ExpertConfig(target_noise_std=noise), seed=seed)
        store.begin("pick up the cube", "scripted_expert")
        for step in range(150):
            target = expert.act(sim)
            if step % 3 == 0:
                store.add(RecordedFrame(sim.render(fresh=True), sim.joint_positions(), target, sim.time, sim.time))
            sim.set_joint_targets(target)
            sim.step()
            if sim.is_success() and step % 3 == 2:
                break
        store.save(Outcome.SUCCESS if sim.is_success() else Outcome.FAILURE)
    store.close()
    sim.close()
