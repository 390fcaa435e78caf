"""LeRobot flow VLAs behind RLChunkPolicy, on a SmolVLA built offline at a tiny size.

SmolVLA reads its VLM backbone config and processor with ``from_pretrained(vlm_model_name)``; offline, a tiny
SmolVLM config, a word-level tokenizer and a processor are saved to a temporary directory and named there
(DESIGN.md section 5). pi0 / pi0.5 cannot be built at a testable size: their Gemma sizes come from a fixed
table (gemma_300m / gemma_2b), the SigLIP tower is full size (412 M parameters) and its projector is fixed at
2048 wide, so only a gemma_2b language model runs (about 3.5-4 B parameters in all). Their branch of the
adapter (PaliGemma prefix pass with 4-D masks, ``denoise_step`` with or without the state) is therefore not
exercised here; the shared code path (processors, chain, log-prob, value head, checkpoints) is, through SmolVLA.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from tiny_models import ACTION_DIM, CHUNK, EXECUTED, IMAGE, PADDED, VIEWS, save_tiny_smolvla, save_tiny_smolvlm

from vla_mbpo_ros.core.policy.base import ChunkPolicy, ObsBatch, RLChunkPolicy, load_policy
from vla_mbpo_ros.core.policy.checkpoint import checkpoint_sha256
from vla_mbpo_ros.core.policy.flow_sde import FlowSDEConfig
from vla_mbpo_ros.core.policy.lerobot_adapter import LeRobotFlowConfig, LeRobotFlowPolicy
from vla_mbpo_ros.core.policy.value_head import ValueHeadConfig
from vla_mbpo_ros.core.rl.ppo import PPOConfig, PPOUpdater

torch.set_num_threads(1)
INSTRUCTION = "pick up the cube"


@pytest.fixture(scope="module")
def lerobot_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("smolvla")
    return save_tiny_smolvla(root / "policy", save_tiny_smolvlm(root / "vlm"))


@pytest.fixture(scope="module")
def adapter(lerobot_dir: Path) -> LeRobotFlowPolicy:
    torch.manual_seed(1)
    return LeRobotFlowPolicy.from_lerobot(lerobot_dir, LeRobotFlowConfig(
        inference_steps=5, sde=FlowSDEConfig(num_steps=3, noise_level=0.5), value_head=ValueHeadConfig((32, 16))))


def obs_batch(count: int, seed: int = 0) -> ObsBatch:
    rng = np.random.default_rng(seed)
    return ObsBatch(views={v: rng.integers(0, 256, (count, IMAGE, IMAGE, 3), dtype=np.uint8) for v in VIEWS},
                    states=rng.normal(size=(count, 6)).astype(np.float32), instructions=[INSTRUCTION] * count)


def test_adapter_satisfies_both_protocols_with_lerobot_shapes(adapter: LeRobotFlowPolicy):
    assert isinstance(adapter, ChunkPolicy) and isinstance(adapter, RLChunkPolicy)
    assert adapter.backend == "smolvla" and adapter.view_names == VIEWS
    assert (adapter.chunk_size, adapter.action_dim, adapter.inference_steps) == (EXECUTED, ACTION_DIM, 5)
    # The value head reads the VLM's hidden size; the VLM is frozen in RL, the expert is not.
    assert adapter.value_head.mlp[0].in_features == 64
    actor = {id(p) for p in adapter.actor_parameters()}
    expert = list(adapter.lerobot.model.vlm_with_expert.lm_expert.parameters())
    vlm = list(adapter.lerobot.model.vlm_with_expert.vlm.parameters())
    assert all(id(p) in actor for p in expert) and not any(id(p) in actor for p in vlm)
    assert {id(p) for p in adapter.critic_parameters()}.isdisjoint(actor)


def test_deterministic_chunks_are_unnormalized_and_match_lerobot_sampling(adapter: LeRobotFlowPolicy):
    batch = obs_batch(3)
    chunks = adapter.predict_chunks(batch)
    assert chunks.shape == (3, EXECUTED, ACTION_DIM) and chunks.dtype == np.float32
    np.testing.assert_array_equal(chunks, adapter.predict_chunks(batch))  # zero initial noise: deterministic
    np.testing.assert_allclose(adapter.predict_chunk(adapter_obs(batch, 1)), chunks[1], atol=1e-5)
    # LeRobot's own loop (same zero noise, same Euler steps) gives the same normalized chunk.
    processed = adapter._lerobot_batch(batch)
    reference = adapter.lerobot.predict_action_chunk(
        processed, noise=torch.zeros(3, CHUNK, PADDED))[:, :EXECUTED].float()
    np.testing.assert_allclose(chunks, adapter.postprocessor(reference).numpy(), atol=1e-4)
    with pytest.raises(ValueError, match="wrist"):
        adapter.predict_chunks(ObsBatch(views={"head": batch.views["head"]}, states=batch.states,
                                        instructions=batch.instructions))


def adapter_obs(batch: ObsBatch, row: int):
    from vla_mbpo_ros.core.data.episode import Observation

    return Observation(views={v: batch.views[v][row] for v in VIEWS}, state=batch.states[row], instruction=INSTRUCTION)


def test_flow_sde_samples_have_reproducible_log_probs_and_train_the_expert(adapter: LeRobotFlowPolicy):
    batch = obs_batch(4, seed=1)
    sample = adapter.sample_chunks(batch, torch.Generator().manual_seed(0))
    assert sample.actions.shape == (4, EXECUTED, ACTION_DIM)
    assert sample.chain.shape == (4, 4, CHUNK, PADDED) and sample.value.shape == (4,)
    again = adapter.sample_chunks(batch, torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(sample.actions, again.actions)
    other = adapter.sample_chunks(batch, torch.Generator().manual_seed(1))
    assert not np.allclose(sample.actions, other.actions)
    # The final iterate is the executed, unnormalized chunk.
    np.testing.assert_allclose(sample.actions, adapter._unnormalize(sample.chain[:, -1]), atol=1e-6)

    log_prob, value = adapter.evaluate_chains(batch, sample.chain, sample.denoise_index)
    torch.testing.assert_close(log_prob.detach(), sample.log_prob, atol=1e-3, rtol=1e-5)
    torch.testing.assert_close(value.detach(), sample.value)
    assert log_prob.requires_grad and torch.isfinite(log_prob).all()

    # One PPO step on a positive advantage for sample 0 raises its log-prob; the VLM does not move.
    vlm_before = [p.detach().clone() for p in adapter.lerobot.model.vlm_with_expert.vlm.parameters()]
    updater = PPOUpdater(adapter, PPOConfig(actor_lr=1e-3, critic_lr=1e-3, clip_low=0.5, clip_high=0.5))
    advantages = torch.tensor([1.0, 0.0, 0.0, 0.0])
    stats = updater.update(observations=batch, chains=sample.chain, denoise_index=sample.denoise_index,
                           old_log_probs=sample.log_prob, old_values=sample.value, advantages=advantages,
                           returns=sample.value + 1.0, mask=torch.ones(4, dtype=torch.bool), critic_only=False)
    assert abs(stats["ratio_mean"] - 1.0) < 1e-3
    after, _ = adapter.evaluate_chains(batch, sample.chain, sample.denoise_index, with_value=False)
    assert float(after[0].detach()) > float(sample.log_prob[0])
    assert all(torch.equal(a, b) for a, b in zip(vlm_before, adapter.lerobot.model.vlm_with_expert.vlm.parameters()))


def test_checkpoint_roundtrip_is_self_contained_and_offline(adapter: LeRobotFlowPolicy, tmp_path: Path):
    with torch.no_grad():
        adapter.value_head.mlp[-1].bias.fill_(0.25)  # distinguishable from a fresh value head
    adapter.version = "7"
    adapter.save(tmp_path / "ckpt")
    saved = sorted(p.relative_to(tmp_path / "ckpt").as_posix() for p in (tmp_path / "ckpt").rglob("*")
                   if p.is_file())
    assert {"config.json", "model.safetensors", "lerobot/model.safetensors", "lerobot/config.json",
            "vlm/config.json", "tokenizer/tokenizer.json"} <= set(saved)
    assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in saved)  # no pickles
    digest = checkpoint_sha256(tmp_path / "ckpt")

    loaded = load_policy(tmp_path / "ckpt")  # dispatches on config.json "type" = "lerobot_flow"
    assert isinstance(loaded, LeRobotFlowPolicy) and loaded.version == "7"
    batch = obs_batch(2, seed=3)
    np.testing.assert_allclose(loaded.predict_chunks(batch), adapter.predict_chunks(batch), atol=1e-6)
    torch.testing.assert_close(loaded.value(batch), adapter.value(batch))
    # The checkpoint names its own backbone and tokenizer copies, not the temporary directory they came from.
    assert Path(loaded.lerobot.config.vlm_model_name) == tmp_path / "ckpt" / "vlm"
    assert checkpoint_sha256(tmp_path / "ckpt") == digest  # loading wrote nothing


def test_config_errors_name_the_field(lerobot_dir: Path):
    with pytest.raises(ValueError, match="deploy_noise"):
        LeRobotFlowConfig(deploy_noise="maybe")
    with pytest.raises(ValueError, match="inference_steps"):
        LeRobotFlowConfig(inference_steps=-1)
    with pytest.raises(ValueError, match="bogus"):
        LeRobotFlowConfig.from_dict({"bogus": 1})
    with pytest.raises(ValueError, match="view_keys"):
        LeRobotFlowPolicy.from_lerobot(lerobot_dir, LeRobotFlowConfig(view_keys={"head": "observation.images.top"}))

