"""What makes config/finetune_gpu.yaml mean what it says, at toy sizes on the CPU: the bounded KV cache of
imagination, fp32 master weights with frozen parts in bf16, the world model's trainable selection and
gradient checkpointing."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_world_model import DATA, INSTRUCTION, SIZE, VIEWS, make_episodes, tiny_model  # noqa: E402

from vla_mbpo_ros.core.world_model.data import build_samples  # noqa: E402
from vla_mbpo_ros.core.world_model.modeling import Embedded  # noqa: E402
from vla_mbpo_ros.core.world_model.train import TrainConfig, train_world_model  # noqa: E402

torch.set_num_threads(1)


def _greedy_without_cache(core, batch: Embedded, steps: int) -> torch.Tensor:
    """Reference: every token from a full forward over the prompt + the tokens so far (no cache at all)."""
    embeds, mask, positions = batch.inputs_embeds, batch.attention_mask, batch.position_ids
    tokens = []
    for _ in range(steps):
        hidden = core.janus.model.language_model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                                                 use_cache=False).last_hidden_state[:, -1]
        token = core.janus.model.generation_head(hidden).float().argmax(-1)
        tokens.append(token)
        embeds = torch.cat([embeds, core.janus.prepare_embeddings_for_image_generation(token[:, None])], dim=1)
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        positions = torch.cat([positions, positions[:, -1:] + 1], dim=1)
    return torch.stack(tokens, dim=1)


def test_static_kv_cache_generation_equals_full_recomputation_with_left_padding():
    model = tiny_model(seed=3)
    core = model.core.eval()
    rng = np.random.default_rng(0)
    current = {v: torch.from_numpy(rng.integers(0, 255, (3, SIZE, SIZE, 3), dtype=np.uint8)) for v in VIEWS}
    # Action texts of different lengths: the rows are left-padded to different amounts.
    texts = ["Step 0: [1, 2]", "Step 0: [100, 200] Step 1: [3, 4] Step 2: [5, 6]", "Step 0: [7]"]
    und, vq = core._image_banks(current, None)
    rows = [(b, core.render(spec, include_target=False)) for b, spec in core._dynamics_rows(texts)[0]]
    batch = core.embed(rows, und, vq, pad_left=True)
    assert len(set(batch.attention_mask.sum(1).tolist())) == 3
    with torch.no_grad():
        cached = core.generate_image_tokens(batch)
        reference = _greedy_without_cache(core, batch, core.n_vq)
    torch.testing.assert_close(cached, reference, rtol=0, atol=0)


@pytest.fixture
def fresh_accelerate_state():
    """accelerate keeps one process-wide state: a bf16 run must not leak its mixed precision into later tests."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)
    yield
    AcceleratorState._reset_state(True)


def test_bf16_world_model_training_keeps_fp32_masters_and_trains_only_the_selected_layers(fresh_accelerate_state):
    episodes = make_episodes(4, seed=1)
    dynamics, reward = build_samples(episodes, VIEWS, DATA)
    model = tiny_model(seed=0)
    janus = model.core.janus
    before = {n: p.detach().clone() for n, p in janus.named_parameters()}
    config = TrainConfig(steps=3, batch_size=2, reward_batch_size=2, lr=1e-2, warmup_steps=1, mixed_precision="bf16",
                         train_llm_layers=1, gradient_checkpointing=True)
    history = train_world_model(model, dynamics, reward, config, progress=False)
    assert all(np.isfinite(history.image_loss)) and all(np.isfinite(history.answer_loss))
    assert janus.model.language_model.is_gradient_checkpointing
    params = dict(janus.named_parameters())
    last, first = "model.language_model.layers.1.", "model.language_model.layers.0."
    for name, param in params.items():
        trainable = param.requires_grad
        assert param.dtype == (torch.float32 if trainable else torch.bfloat16), name
        if name.startswith(last) and name.endswith("proj.weight"):
            assert trainable and not torch.equal(param.detach(), before[name]), name  # masters moved
        if name.startswith((first, "model.vision_model.", "model.vqmodel.", "lm_head.", "model.language_model.embed")):
            assert not trainable, name
            torch.testing.assert_close(param.detach().float(), before[name].to(torch.bfloat16).float(), rtol=0, atol=0)
    # The trained model still generates (mixed dtypes under the caller's autocast).
    views = {v: np.zeros((1, SIZE, SIZE, 3), np.uint8) for v in VIEWS}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, reward_value, _ = model.step(views, np.zeros((1, 2, 2), np.float32), [INSTRUCTION])
    assert out["head"].shape == (1, SIZE, SIZE, 3)


def test_train_llm_layers_beyond_the_model_is_refused():
    episodes = make_episodes(2, seed=1)
    dynamics, reward = build_samples(episodes, VIEWS, DATA)
    with pytest.raises(ValueError, match="train_llm_layers"):
        train_world_model(tiny_model(), dynamics, reward, TrainConfig(steps=1, train_llm_layers=5), progress=False)


# ------------------------------------------------------------------------------ the policy side
TEST_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TEST_DIR))
from tiny_models import CHUNK, IMAGE, PADDED, save_tiny_smolvla, save_tiny_smolvlm  # noqa: E402

from vla_mbpo_ros.core.policy.base import ObsBatch  # noqa: E402
from vla_mbpo_ros.core.policy.lerobot_adapter import LeRobotFlowConfig, LeRobotFlowPolicy  # noqa: E402
from vla_mbpo_ros.core.policy.lerobot_robot import RobotInterface, check_frame_skip  # noqa: E402


@pytest.fixture(scope="module")
def smolvla_dirs(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("smolvla_gpu_setup")
    vlm = save_tiny_smolvlm(root / "vlm")
    return save_tiny_smolvla(root / "policy", vlm), vlm


def _batch(count: int, state_dim: int, views=("head",)) -> ObsBatch:
    rng = np.random.default_rng(0)
    return ObsBatch(views={v: rng.integers(0, 256, (count, IMAGE, IMAGE, 3), dtype=np.uint8) for v in views},
                    states=rng.normal(size=(count, state_dim)).astype(np.float32), instructions=["pick up the cube"] * count)


def test_a_checkpoint_is_adapted_to_the_robots_dims_views_and_executed_chunk(smolvla_dirs, tmp_path):
    lerobot_dir, vlm = smolvla_dirs
    robot = RobotInterface(state_dim=5, action_dim=4, view_keys={"head": "observation.images.front"}, executed_chunk=3)
    policy = LeRobotFlowPolicy.from_lerobot(lerobot_dir, LeRobotFlowConfig(), robot=robot, tokenizer_dir=vlm)
    assert (policy.chunk_size, policy.action_dim, policy.view_names) == (3, 4, ("head",))
    assert list(policy.lerobot.config.image_features) == ["observation.images.front"]
    # The checkpoint's statistics are for 6-d actions: nothing is predicted with them.
    assert not policy.normalization_fitted
    with pytest.raises(RuntimeError, match="fit_normalization"):
        policy.predict_chunks(_batch(1, 5))
    rng = np.random.default_rng(1)
    policy.fit_normalization(rng.normal(size=(50, 5)), rng.normal(size=(50, 4)))
    chunk = policy.predict_chunks(_batch(2, 5))
    assert chunk.shape == (2, 3, 4) and np.isfinite(chunk).all()
    policy.save(tmp_path / "adapted")  # the adapted config and the robot's statistics travel with it
    reloaded = LeRobotFlowPolicy.load(tmp_path / "adapted")
    np.testing.assert_allclose(reloaded.predict_chunks(_batch(2, 5)), chunk, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("field, robot", [
    ("action_dim", RobotInterface(6, PADDED + 1, {"head": "observation.images.head"}, 3)),
    ("state_dim", RobotInterface(PADDED + 1, 6, {"head": "observation.images.head"}, 3)),
    ("executed_chunk", RobotInterface(6, 6, {"head": "observation.images.head"}, CHUNK + 1)),
])
def test_what_cannot_be_adapted_is_refused_naming_the_field(smolvla_dirs, field, robot):
    lerobot_dir, _ = smolvla_dirs
    with pytest.raises(ValueError, match=f"^{field}"):
        LeRobotFlowPolicy.from_lerobot(lerobot_dir, LeRobotFlowConfig(), robot=robot)


def test_executed_chunk_must_equal_the_world_models_frame_skip():
    check_frame_skip(10, 10)
    with pytest.raises(ValueError, match="world_model.data.chunk_size"):
        check_frame_skip(50, 10)


def test_local_tokenizer_directory_is_used_and_a_missing_one_is_named(smolvla_dirs, tmp_path):
    lerobot_dir, vlm = smolvla_dirs
    policy = LeRobotFlowPolicy.from_lerobot(lerobot_dir, LeRobotFlowConfig(), tokenizer_dir=vlm)
    names = [getattr(step, "tokenizer_name", None) for step in policy.preprocessor.steps]
    assert str(vlm) in names
    with pytest.raises(FileNotFoundError, match="policy.tokenizer"):
        LeRobotFlowPolicy.from_lerobot(lerobot_dir, LeRobotFlowConfig(), tokenizer_dir=tmp_path / "absent")
    with pytest.raises(ValueError, match="gradient_checkpointing"):
        LeRobotFlowPolicy.from_lerobot(lerobot_dir, LeRobotFlowConfig(gradient_checkpointing=True))


@pytest.mark.parametrize("which", ["expert", "expert+vlm", "all"])
def test_bc_trainable_selection_with_fp32_masters_and_bf16_frozen(smolvla_dirs, which):
    lerobot_dir, _ = smolvla_dirs
    policy = LeRobotFlowPolicy.from_lerobot(lerobot_dir, LeRobotFlowConfig(bc_trainable=which, dtype="bfloat16"))
    trainable = {id(p) for p in policy.bc_parameters()}
    for name, param in policy.lerobot.model.named_parameters():
        vision = name.startswith("vlm_with_expert.vlm.model.vision_model.")
        vlm = name.startswith("vlm_with_expert.vlm.") and not vision
        expected = "lm_head" not in name and (not (vision or vlm) or (vlm and which != "expert") or which == "all")
        assert (id(param) in trainable) == expected == param.requires_grad, name
        assert param.dtype == (torch.float32 if expected else torch.bfloat16), name
    # RL's selection: the action expert only (the VLM and the unused LM heads frozen).
    actor = {id(p) for p in policy.actor_parameters()}
    assert actor and all(not n.startswith("vlm_with_expert.vlm.") and "lm_head" not in n
                         for n, p in policy.lerobot.model.named_parameters() if id(p) in actor)


def test_bf16_policy_runs_bc_and_its_first_ppo_ratio_is_one(smolvla_dirs):
    """Under CPU bf16 autocast, as the GPU setup runs: BC steps, then sampling at one batch and evaluation of
    a permuted subset at another give the same log-probs (ratio 1), and PPO only sees trainable parameters."""
    from vla_mbpo_ros.core.policy.bc import BCArrays, BCConfig, train_bc
    from vla_mbpo_ros.core.rl.ppo import PPOConfig, PPOUpdater

    lerobot_dir, _ = smolvla_dirs
    policy = LeRobotFlowPolicy.from_lerobot(lerobot_dir, LeRobotFlowConfig(dtype="bfloat16", bc_trainable="expert"))
    rng = np.random.default_rng(2)
    n = 12
    data = BCArrays(views={v: rng.integers(0, 256, (n, IMAGE, IMAGE, 3), dtype=np.uint8) for v in policy.view_names},
                    states=rng.normal(size=(n, 6)).astype(np.float32),
                    action_chunks=rng.normal(size=(n, CHUNK, 6)).astype(np.float32),
                    action_valid=np.ones((n, CHUNK), bool), instructions=["pick up the cube"] * n,
                    actions=rng.normal(size=(n, 6)).astype(np.float32))
    expert = next(p for name, p in policy.lerobot.model.named_parameters() if "lm_expert" in name and p.ndim == 2)
    before = expert.detach().clone()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = train_bc(policy, data, BCConfig(steps=2, batch_size=4, learning_rate=1e-3))
    assert np.isfinite(losses).all() and expert.dtype == torch.float32 and not torch.equal(expert.detach(), before)
    batch = _batch(8, 6, policy.view_names)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        sample = policy.sample_chunks(batch, torch.Generator().manual_seed(0))
        rows = np.array([5, 1, 6])
        log_prob, _ = policy.evaluate_chains(batch.select(rows), sample.chain[rows], sample.denoise_index[rows])
    ratio = torch.exp(log_prob.detach().float() - sample.log_prob[rows].float())
    assert abs(float(ratio.mean()) - 1.0) < 1e-3
    updater = PPOUpdater(policy, PPOConfig())
    trainable = {id(p) for p in updater.actor_params + updater.critic_params}
    assert all(p.requires_grad == (id(p) in trainable) for p in policy.parameters())
    assert not any(p.requires_grad for p in policy.lerobot.model.vlm_with_expert.vlm.parameters())


def test_rollback_restores_the_trained_parameters_from_a_cpu_snapshot():
    sys.path.insert(0, str(TEST_DIR / "core"))
    from test_mbpo import tiny_policy, toy_sampler
    from toy_world import PointReachWorld

    from vla_mbpo_ros.core.rl.ppo import PPOConfig
    from vla_mbpo_ros.core.rl.trainer import MBPOConfig, MBPOTrainer

    class DroppingValidation(MBPOTrainer):  # imagined success 1.0 before, 0.0 after: a drop
        calls = 0

        def validation_success(self) -> float:
            self.calls += 1
            return 1.0 if self.calls == 1 else 0.0

    world = PointReachWorld()
    policy = tiny_policy(0)
    config = MBPOConfig(num_iterations=1, samples_per_refill=16, update_to_data=2, minibatch_size=16,
                        critic_warmup_updates=0, validation_starts=4, actor_needs_reward=False,
                        ppo=PPOConfig(actor_lr=1e-2, critic_lr=1e-2))
    trainer = DroppingValidation(policy, world, toy_sampler(world), config)
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    snapshot = trainer._trainable_snapshot()
    assert all(t.device.type == "cpu" for t in snapshot)
    result = trainer.train()
    assert not result["accepted"]
    for key, value in policy.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
