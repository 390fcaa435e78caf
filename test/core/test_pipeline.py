"""The outer VLA-MBPO iteration (pipeline): BC bootstrap, world model + RL + publish, resumability.

Real parts only: episodes of the MuJoCo sim recorded into a real LeRobotDataset with the recorder's
store, the tiny Janus world model, the compact flow VLA.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from sim_data import IMAGE, record_sim_episodes, small_finetune_config

from vla_mbpo_ros.core.data.reader import load_episodes
from vla_mbpo_ros.core.loop.pipeline import PipelineConfig, read_state, run_iteration
from vla_mbpo_ros.core.policy.base import ObsBatch, load_policy
from vla_mbpo_ros.core.policy.checkpoint import checkpoint_sha256


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data") / "dataset"
    record_sim_episodes(root, seeds=range(4))
    return root


@pytest.fixture
def config(tmp_path) -> Path:
    """config/finetune_sim.yaml, shrunk further so the test stays around a minute."""
    return small_finetune_config(tmp_path / "finetune.yaml", bc_steps=30, world_model_steps=20, vq_fit_steps=20)


def test_recorded_episodes_read_back_whole(dataset):
    episodes = load_episodes(dataset, ("head", "wrist"))
    assert len(episodes) == 4
    first = episodes[0]
    assert first.success is True and first.source == "scripted_expert" and first.instruction == "pick up the cube"
    assert first.views["head"].shape == (len(first), *IMAGE, 3) and first.states.shape == (len(first), 6)
    assert 20 <= len(first) <= 50


def test_episodes_decoded_in_one_pass_equal_lerobots_own_frame_reader(dataset):
    """The reader decodes a whole episode per view at once; LeRobot's ``dataset[i]`` decodes one frame."""
    from vla_mbpo_ros.core.data.reader import open_dataset, read_episodes

    lerobot = open_dataset(dataset)
    episodes = read_episodes(lerobot, ("head", "wrist"))
    row = 0
    for episode in episodes:
        for t in (0, len(episode) // 2, len(episode) - 1):
            item = lerobot[row + t]
            for view in ("head", "wrist"):
                expected = (item[f"observation.images.{view}"] * 255).round().byte().permute(1, 2, 0).numpy()
                np.testing.assert_array_equal(episode.views[view][t], expected)
            np.testing.assert_array_equal(episode.actions[t], item["action"].numpy())
        row += len(episode)
    assert [e.index for e in episodes] == [0, 1, 2, 3]


def test_bootstrap_then_world_model_and_rl_iteration_publish_verified_versions(dataset, tmp_path):
    run = tmp_path / "run"
    config = small_finetune_config(tmp_path / "finetune.yaml", bc_steps=30, world_model_steps=20, vq_fit_steps=20,
                                   actor_frozen=True)  # so the candidate must be published
    first = run_iteration(run, dataset, PipelineConfig.from_yaml(config))
    assert first["published"] and first["version"] == "v0001"
    assert checkpoint_sha256(Path(first["path"])) == first["sha256"]
    assert load_policy(Path(first["path"])).version == "v0001"

    second = run_iteration(run, dataset, PipelineConfig.from_yaml(config))
    metrics = second["metrics"]
    image_loss = metrics["world_model.image_loss"]
    assert image_loss[1] < image_loss[0], "the world model's image-token loss must fall during finetuning"
    assert 0.0 <= metrics["rl.success_after"] <= 1.0 and metrics["rl.start_states"] >= 4
    it_dir = run / "iterations" / "0001"
    assert (it_dir / "world_model" / "config.json").is_file() and (it_dir / "real_vs_imagined.png").is_file()
    assert metrics["rl.success_after"] == metrics["rl.success_before"]
    state = read_state(run)
    assert state["iterations_done"] == 2
    assert second["published"] and second["version"] == "v0002" and state["current_policy"]["version"] == "v0002"
    assert checkpoint_sha256(Path(second["path"])) == second["sha256"]
    assert (run / "report" / "metrics.csv").read_text().count("\n") == 3
    assert (run / "report" / "learning_curves.png").is_file()


def test_a_candidate_whose_imagined_success_dropped_is_not_published(dataset, config, tmp_path):
    """The RL phase's validation decides. The run is put back as it was right after its RL phase (killed
    before publishing), with that phase's record saying the imagined success fell: the resumed iteration
    publishes nothing and keeps v0001."""
    run = tmp_path / "run"
    run_iteration(run, dataset, PipelineConfig.from_yaml(config))
    after_bootstrap = (run / "state.json").read_text()
    run_iteration(run, dataset, PipelineConfig.from_yaml(config))
    it_dir = run / "iterations" / "0001"
    for marker in ("publish.done", "publish.metrics.json", "result.json"):
        (it_dir / marker).unlink()
    shutil.rmtree(run / "checkpoints" / "v0002", ignore_errors=True)
    (run / "checkpoints" / "v0002.manifest.json").unlink(missing_ok=True)
    (run / "state.json").write_text(after_bootstrap)
    rl = json.loads((it_dir / "rl.metrics.json").read_text())
    (it_dir / "rl.metrics.json").write_text(json.dumps({**rl, "success_before": 0.5, "success_after": 0.25, "accepted": False}))

    resumed = run_iteration(run, dataset, PipelineConfig.from_yaml(config))
    assert not resumed["published"] and resumed["reason"] == "imagined success 0.50 -> 0.25"
    state = read_state(run)
    assert state["iterations_done"] == 2 and state["current_policy"]["version"] == "v0001"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["v0001", "v0001.manifest.json"]


def test_a_restarted_iteration_skips_finished_phases(dataset, config, tmp_path):
    run = tmp_path / "run"
    run_iteration(run, dataset, PipelineConfig.from_yaml(config))
    after_bootstrap = (run / "state.json").read_text()
    run_iteration(run, dataset, PipelineConfig.from_yaml(config))
    it_dir = run / "iterations" / "0001"
    wm_stamp = (it_dir / "world_model" / "config.json").stat().st_mtime_ns
    # As if killed after the world model phase: later markers gone, the run state as it was then.
    for marker in ("rl.done", "publish.done", "result.json"):
        (it_dir / marker).unlink()
    (run / "state.json").write_text(after_bootstrap)
    resumed = run_iteration(run, dataset, PipelineConfig.from_yaml(config))
    assert resumed["iteration"] == 1
    assert (it_dir / "world_model" / "config.json").stat().st_mtime_ns == wm_stamp, "world model must not be retrained"
    assert np.isfinite(resumed["metrics"]["rl.success_after"])


def test_too_few_episodes_is_a_clear_error(dataset, config, tmp_path):
    data = yaml.safe_load(config.read_text())
    data["min_episodes"] = 99
    config.write_text(yaml.safe_dump(data))
    with pytest.raises(RuntimeError, match="only 4 labelled episodes"):
        run_iteration(tmp_path / "run", dataset, PipelineConfig.from_yaml(config))


def test_the_gpu_setup_runs_on_the_cpu_with_a_lerobot_smolvla_and_a_janus_snapshot(dataset, tmp_path):
    """config/finetune_gpu.yaml as shipped (paper values, Janus-Pro prompts), with the sizes shrunk, the
    devices set to the CPU, and local tiny snapshots where it names pi0.5 and Janus-Pro: the policy is a
    LeRobot SmolVLA loaded with its own from_pretrained and SFT-ed on the demos, the world model a plain
    Janus snapshot finetuned through the `pretrained` path (not UMMWorldModel.tiny)."""
    from sim_data import gpu_setup_on_cpu_config

    from vla_mbpo_ros.core.world_model.umm import UMMWorldModel

    config_path = tmp_path / "gpu_on_cpu.yaml"
    data = gpu_setup_on_cpu_config(config_path, tmp_path)
    config = PipelineConfig.from_yaml(config_path)
    run = tmp_path / "run"

    first = run_iteration(run, dataset, config)
    policy = load_policy(Path(first["path"]))
    assert first["metrics"]["bc.backend"] == "smolvla" and policy.backend == "smolvla" and policy.version == "v0001"
    assert len(first["metrics"]["bc.bc_loss"]) == 2  # the SFT ran (first and last losses)
    chunk = policy.predict_chunks(ObsBatch({v: np.zeros((1, 32, 32, 3), np.uint8) for v in ("head", "wrist")},
                                           np.zeros((1, 6), np.float32), ["pick up the cube"]))
    assert chunk.shape == (1, policy.chunk_size, 6) and np.isfinite(chunk).all()

    second = run_iteration(run, dataset, config)
    assert second["metrics"]["world_model.pretrained"] == str(data["world_model"]["pretrained"])
    world_model = UMMWorldModel.from_pretrained(run / "iterations" / "0001" / "world_model")
    assert world_model.config.prompts.system.startswith("<|User|>")  # the setup's chat format was applied
    assert world_model.codec.stats.low.shape == (6,)  # statistics of the recorded actions (the snapshot had none)
    assert second["metrics"]["rl.start_states"] > 0 and "rl.approx_kl" in second["metrics"]


def test_the_reward_gate_holds_on_false_successes_among_unseen_frames():
    from vla_mbpo_ros.core.rl.acceptance import trust_reward

    assert trust_reward({}, 0.0) == (True, "")  # gate off
    assert trust_reward({}, 0.9)[0] is False  # nothing measured: no trust
    trusted, why = trust_reward({"held_out_reward_precision": 0.5}, 0.9)
    assert not trusted and "precision 0.50 < 0.90" in why
    trusted, why = trust_reward({"held_out_reward_precision": float("nan")}, 0.9)  # no Yes: nothing measured
    assert not trusted and "nan" in why
    assert trust_reward({"held_out_reward_precision": 0.95}, 0.9) == (True, "")


def test_the_validation_gate_accepts_only_on_evidence():
    from vla_mbpo_ros.core.rl.acceptance import accept_update

    assert accept_update(0.0, 0.0)[0] is False and "no success" in accept_update(0.0, 0.0)[1]
    assert accept_update(0.5, 0.25) == (False, "imagined success 0.50 -> 0.25: dropped")
    assert accept_update(float("nan"), 0.5)[0] is False
    assert accept_update(0.25, 0.25) == (True, "imagined success 0.25 -> 0.25")
    assert accept_update(0.0, 0.0, require_success=False)[0] is True
    assert accept_update(1.0, 1.0) == (False, "imagined success 1.00 -> 1.00: saturated, no gain to show")
    assert accept_update(0.98, 1.0)[0] is True and accept_update(1.0, 1.0, require_success=False)[0] is True


def test_imagination_is_calibrated_only_within_the_real_success_interval():
    from vla_mbpo_ros.core.rl.acceptance import imagination_calibrated

    assert imagination_calibrated(0.4, 4, 10) == (True, "")  # Wilson 95 % of 4/10: [0.17, 0.69]
    assert imagination_calibrated(0.68, 4, 10)[0] and not imagination_calibrated(0.69, 4, 10)[0]
    assert imagination_calibrated(0.86, 1, 10) == (False, "imagination not calibrated: imagined success 0.86 of the "
                                                          "running policy, real 1/10 [0.02, 0.40]")
    assert not imagination_calibrated(0.0, 4, 10)[0]  # imagining nothing succeed is as wrong
    assert not imagination_calibrated(float("nan"), 4, 10)[0]
    assert "no real episodes" in imagination_calibrated(0.4, 0, 0)[1]


def test_an_untrusted_reward_holds_the_update_and_keeps_the_running_version(dataset, tmp_path):
    """The gate's hold path in the loop: a random-init world model has no reward measured on unseen frames,
    so with a precision floor the iteration runs no RL phase and publishes nothing."""
    config = small_finetune_config(tmp_path / "finetune.yaml", bc_steps=30, world_model_steps=5, vq_fit_steps=5)
    data = yaml.safe_load(config.read_text())
    data["world_model"]["min_reward_precision"] = 0.9
    config.write_text(yaml.safe_dump(data))
    run = tmp_path / "run"
    run_iteration(run, dataset, PipelineConfig.from_yaml(config))
    held = run_iteration(run, dataset, PipelineConfig.from_yaml(config))
    assert not held["published"] and held["reason"] == "held: reward not measured on unseen real frames"
    assert not (run / "iterations" / "0001" / "rl.done").exists()
    state = read_state(run)
    assert state["iterations_done"] == 2 and state["current_policy"]["version"] == "v0001"


def test_with_calibrated_validation_an_iteration_without_policy_episodes_holds(dataset, tmp_path):
    """The loop hands the trainer the running policy's episodes since the last iteration; the dataset's
    episodes are demonstrations only, so there is no real success to check imagination against: held, with
    that reason, before any RL step."""
    config = small_finetune_config(tmp_path / "finetune.yaml", bc_steps=30, world_model_steps=5, vq_fit_steps=5)
    data = yaml.safe_load(config.read_text())
    data["mbpo"]["calibrated_validation"] = True
    config.write_text(yaml.safe_dump(data))
    run = tmp_path / "run"
    run_iteration(run, dataset, PipelineConfig.from_yaml(config))
    held = run_iteration(run, dataset, PipelineConfig.from_yaml(config))
    assert not held["published"]
    assert held["reason"] == "imagination not calibrated: no real episodes of the running policy to compare with"
    rl = json.loads((run / "iterations" / "0001" / "rl.metrics.json").read_text())
    assert rl["calibrated"] is False and rl["imagined_success"] == []  # no refill ran
    assert read_state(run)["current_policy"]["version"] == "v0001"


def test_the_rl_phase_moves_the_actor_not_only_the_critic(dataset, tmp_path):
    """Actor updates on every refill (no reward needed, no rollback), anchored to the demonstrations: the
    candidate's action expert and value head both differ from the running policy's, while the frozen
    prefix (VLM) is untouched."""
    config = small_finetune_config(tmp_path / "finetune.yaml", bc_steps=30, world_model_steps=5, vq_fit_steps=5)
    data = yaml.safe_load(config.read_text())
    # GAE: nonzero advantages without any reward (a group baseline gives 0 there and no actor gradient).
    data["mbpo"].update(actor_needs_reward=False, rollback_on_drop=False, critic_warmup_updates=0,
                        advantage_estimator="gae", group_size=1, bc_anchor_coef=0.5)
    data["mbpo"]["ppo"].update(actor_lr=1e-3)
    config.write_text(yaml.safe_dump(data))
    run = tmp_path / "run"
    first = run_iteration(run, dataset, PipelineConfig.from_yaml(config))
    second = run_iteration(run, dataset, PipelineConfig.from_yaml(config))
    anchor_losses = second["metrics"]["rl.anchor_loss"]  # the flow-matching loss on the recorded demos, per refill
    assert anchor_losses and all(np.isfinite(loss) and loss > 0 for loss in anchor_losses)
    running = load_policy(Path(first["path"]))
    candidate = load_policy(run / "iterations" / "0001" / "candidate")

    def moved(params_a, params_b) -> bool:
        return any(not torch.equal(a, b) for a, b in zip(params_a, params_b))

    assert moved(running.actor_parameters(), candidate.actor_parameters()), "the actor must be updated"
    assert moved(running.critic_parameters(), candidate.critic_parameters())
    assert not moved(running.prefix_parameters(), candidate.prefix_parameters())
