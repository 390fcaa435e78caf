"""Recorded sim episodes for tests: the MuJoCo SO-101 driven by the scripted expert, written with
the recorder's own crash-safe store into a real LeRobotDataset (no ROS needed); and the finetune setup
(config/finetune_sim.yaml) shrunk to train on them in a test's time."""

from __future__ import annotations

from pathlib import Path

import yaml

from vla_mbpo_ros.core.data.episode_store import EpisodeStore
from vla_mbpo_ros.core.data.recording import Outcome, RecordedFrame, RecordingConfig
from vla_mbpo_ros.core.sim import SimConfig, So101Sim
from vla_mbpo_ros.core.sim.expert import ExpertConfig, ScriptedExpert

IMAGE = (32, 32)
FINETUNE_SIM = Path(__file__).resolve().parents[1] / "config" / "finetune_sim.yaml"
FINETUNE_GPU = Path(__file__).resolve().parents[1] / "config" / "finetune_gpu.yaml"


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


def small_finetune_config(path: Path, bc_steps: int, world_model_steps: int, vq_fit_steps: int,
                          actor_frozen: bool = False) -> Path:
    """config/finetune_sim.yaml with the steps given and one RL iteration on 16 imagined samples, written to
    ``path``. ``actor_frozen``: every PPO update is critic-only, so the candidate acts exactly as the running
    policy (greedy world model, deterministic validation): its imagined success equals the running policy's,
    and validation (success must not drop; 0 -> 0 allowed here) accepts it: the iteration publishes."""
    data = yaml.safe_load(FINETUNE_SIM.read_text())
    # A few hundred steps at most: a constant rate (a cosine schedule would spend half of them barely moving),
    # so the first version stays inside the data's action range and the executor's validation accepts it.
    data["policy"]["bc"].update(steps=bc_steps, lr_schedule="constant")
    # A random-init tiny UMM (the tests do not pretrain, make world-model does), which has no trained
    # reward to measure before its first training: no reward gate.
    data["world_model"].update(pretrained="", min_reward_precision=0.0)
    data["world_model"]["train"].update(steps=world_model_steps, vq_fit_steps=vq_fit_steps)
    data["mbpo"].update(num_iterations=1, samples_per_refill=16, rollout_batch_size=8, minibatch_size=16, validation_starts=4)
    if actor_frozen:
        data["mbpo"]["critic_warmup_updates"] = data["mbpo"]["update_to_data"]
        # The untrained policy's validation is 0 -> 0, which the gate holds by default: publish anyway.
        data["mbpo"]["require_validation_success"] = False
    path.write_text(yaml.safe_dump(data))
    return path


def gpu_setup_on_cpu_config(path: Path, snapshots: Path, actor_frozen: bool = False) -> dict:
    """config/finetune_gpu.yaml as shipped (paper values, Janus-Pro prompts) with the sizes shrunk, every
    device the CPU, and local tiny snapshots saved under ``snapshots`` where it names pi0.5 and Janus-Pro:
    a LeRobot SmolVLA (loaded with its own from_pretrained, SFT-ed on the demos) and a plain Janus snapshot
    (finetuned through the ``pretrained`` path). ``actor_frozen`` as in small_finetune_config: the RL
    iteration publishes a candidate that acts as the running policy. Written to ``path``; returns the data."""
    from tiny_models import EXECUTED, save_tiny_janus_snapshot, save_tiny_smolvla, save_tiny_smolvlm

    data = yaml.safe_load(FINETUNE_GPU.read_text())
    smolvla = save_tiny_smolvla(snapshots / "smolvla", save_tiny_smolvlm(snapshots / "smolvlm"))
    data.update(min_episodes=2, torch_threads=1, devices={"world_model_training": "cpu", "imagination": "cpu",
                                                           "policy": "cpu", "dtype": "float32"})
    data["policy"].update(backend="smolvla", pretrained=str(smolvla))
    # SmolVLA has no gradient checkpointing in LeRobot; its tokenizer comes with the tiny VLM directory.
    data["policy"].update(tokenizer="")
    data["policy"]["lerobot"].update(view_keys={}, value_head={"hidden_sizes": [32, 16]}, gradient_checkpointing=False)
    data["policy"]["bc"].update(steps=3, batch_size=4)
    # A random Janus has no trained reward to measure: no reward gate (as in small_finetune_config).
    data["world_model"].update(pretrained=str(save_tiny_janus_snapshot(snapshots / "janus")), min_reward_precision=0.0)
    data["world_model"]["train"].update(steps=3, batch_size=2, reward_batch_size=2, lr=1e-3, warmup_steps=1)
    data["world_model"]["data"]["chunk_size"] = EXECUTED  # the frame skip = the tiny SmolVLA's executed chunk
    data["mbpo"].update(num_iterations=1, samples_per_refill=8, rollout_batch_size=4, update_to_data=2, minibatch_size=8,
                        critic_warmup_updates=2 if actor_frozen else 1, recompute_every=1, validation_starts=2,
                        require_validation_success=not actor_frozen)
    path.write_text(yaml.safe_dump(data))
    return data
