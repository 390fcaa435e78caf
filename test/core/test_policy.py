"""Tests of the chunk-policy interface, the built-in compact flow VLA, BC, checkpoints and Flow-SDE."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from toy_world import PointReachWorld  # noqa: E402

from vla_mbpo_ros.core.data.episode import Observation
from vla_mbpo_ros.core.policy.base import ChunkPolicy, ObsBatch, RLChunkPolicy, load_policy
from vla_mbpo_ros.core.policy.bc import BCArrays, BCConfig, bc_arrays_from_lerobot, train_bc  # noqa: E402
from vla_mbpo_ros.core.policy.checkpoint import checkpoint_sha256  # noqa: E402
from vla_mbpo_ros.core.policy.compact import CompactFlowVLA, CompactFlowVLAConfig  # noqa: E402
from vla_mbpo_ros.core.policy.compact.modeling import hash_instruction  # noqa: E402
from vla_mbpo_ros.core.policy.flow_sde import (  # noqa: E402
    FlowSDEConfig,
    chain_log_prob,
    sample_chain,
    sde_sigmas,
    time_grid,
    transition_mean_std,
)
from vla_mbpo_ros.core.policy.value_head import ValueHead, ValueHeadConfig  # noqa: E402

torch.set_num_threads(1)


def tiny_config(**overrides) -> CompactFlowVLAConfig:
    values = dict(view_names=("head", "wrist"), image_size=32, state_dim=2, action_dim=2, chunk_size=5, width=32,
                  num_heads=2, conv_channels=(16,), token_grid=2, prefix_layers=1, expert_layers=1, mlp_ratio=2,
                  value_head=ValueHeadConfig((64, 64)))
    values.update(overrides)
    return CompactFlowVLAConfig(**values)


def tiny_policy(seed: int = 0, **overrides) -> CompactFlowVLA:
    torch.manual_seed(seed)
    policy = CompactFlowVLA(tiny_config(**overrides))
    policy.eval()
    return policy


def toy_batch(count: int, seed: int = 0) -> ObsBatch:
    world = PointReachWorld()
    positions = world.initial_positions(count, np.random.default_rng(seed))
    return ObsBatch(world.render(positions), positions, [world.config.instruction] * count)


# ------------------------------------------------------------------ interface and config
def test_compact_vla_satisfies_both_protocols():
    policy = tiny_policy()
    assert isinstance(policy, ChunkPolicy)
    assert isinstance(policy, RLChunkPolicy)
    assert (policy.chunk_size, policy.action_dim, policy.view_names) == (5, 2, ("head", "wrist"))


@pytest.mark.parametrize("field,value", [("normalization", "zscore"), ("width", 33), ("chunk_size", 0),
                                         ("deploy_noise", "gaussian")])
def test_config_errors_name_the_field(field, value):
    with pytest.raises(ValueError, match=field if field != "width" else "num_heads"):
        tiny_config(**{field: value})


def test_sde_config_rejects_bad_values():
    with pytest.raises(ValueError, match="num_steps"):
        FlowSDEConfig(num_steps=0)
    with pytest.raises(ValueError, match="noise_level"):
        FlowSDEConfig(noise_level=0.0)


def test_hashed_instruction_is_stable_and_case_insensitive():
    first = hash_instruction("Pick the RED cube", 4096, 16)
    assert first == hash_instruction("pick the red cube!", 4096, 16)
    assert first[0] == 1 and len(first) == 5 and all(2 <= t < 4096 for t in first[1:])
    assert first != hash_instruction("pick the blue cube", 4096, 16)
    assert len(hash_instruction("a " * 40, 4096, 16)) == 16


def test_default_value_head_is_1024_512_256_128_1():
    head = ValueHead(128, ValueHeadConfig())
    linears = [m for m in head.mlp if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (128, 1024), (1024, 512), (512, 256), (256, 128), (128, 1)]


# ------------------------------------------------------------------ deployment inference
def test_predict_chunk_is_deterministic_batched_and_checks_views():
    policy = tiny_policy()
    batch = toy_batch(4)
    chunks = policy.predict_chunks(batch)
    assert chunks.shape == (4, 5, 2) and chunks.dtype == np.float32
    np.testing.assert_array_equal(chunks, policy.predict_chunks(batch))
    obs = Observation(views={n: v[2] for n, v in batch.views.items()}, state=batch.states[2],
                      instruction=batch.instructions[2])
    np.testing.assert_allclose(policy.predict_chunk(obs), chunks[2], atol=1e-5)
    with pytest.raises(ValueError, match="wrist"):
        policy.predict_chunk(Observation(views={"head": obs.views["head"]}, state=obs.state))


def test_views_at_other_resolutions_are_resized():
    policy = tiny_policy()
    batch = toy_batch(2)
    big = ObsBatch({n: np.repeat(np.repeat(v, 2, axis=1), 2, axis=2) for n, v in batch.views.items()},
                   batch.states, batch.instructions)
    assert policy.predict_chunks(big).shape == (2, 5, 2)


# ------------------------------------------------------------------ behaviour cloning
def test_bc_on_arrays_learns_state_dependent_waypoints():
    world = PointReachWorld()
    episodes = world.demo_episodes(16, 10, np.random.default_rng(0), action_noise=0.01, waypoints=True)
    data = BCArrays.from_episodes(episodes, chunk_size=5)
    assert data.action_chunks.shape == (160, 5, 2)
    # Chunks past an episode end repeat its last action and are marked invalid.
    assert not data.action_valid[9, 1:].any() and data.action_valid[5].all()
    np.testing.assert_array_equal(data.action_chunks[9, 4], episodes[0].actions[9])
    policy = tiny_policy()
    batch = toy_batch(32, seed=3)
    expert_first = batch.states + np.clip(world.goal - batch.states, -0.1, 0.1)
    policy.fit_normalization(data.states, data.actions)
    error_before = np.abs(policy.predict_chunks(batch)[:, 0] - expert_first).mean()
    # 250 steps at a fixed rate (a cosine decay over so few steps reaches 0.102 here)
    losses = train_bc(policy, data, BCConfig(steps=250, batch_size=32, learning_rate=3e-3, lr_schedule="constant"))
    assert np.mean(losses[-20:]) < 0.5 * np.mean(losses[:20])
    error_after = np.abs(policy.predict_chunks(batch)[:, 0] - expert_first).mean()
    assert error_after < 0.3 * error_before, (error_before, error_after)
    assert error_after < 0.1, error_after
    assert not policy.training


def test_the_cosine_schedule_warms_up_then_decays_to_zero():
    from vla_mbpo_ros.core.policy.bc import learning_rate_factor

    config = BCConfig(steps=1000, warmup_steps=100)
    factors = [learning_rate_factor(config, step) for step in range(1000)]
    assert factors[0] == pytest.approx(0.01) and factors[99] == pytest.approx(1.0)
    assert factors[550] == pytest.approx(0.5, abs=0.01) and factors[-1] < 1e-4
    assert all(a >= b for a, b in zip(factors[99:], factors[100:]))
    assert learning_rate_factor(BCConfig(lr_schedule="constant"), 5) == 1.0
    with pytest.raises(ValueError, match="lr_schedule"):
        BCConfig(lr_schedule="linear")


def test_random_shift_moves_each_image_by_at_most_the_pad_and_keeps_its_content():
    from vla_mbpo_ros.core.policy.bc import random_shift

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(64, 12, 12, 3), dtype=np.uint8)
    shifted = random_shift(images, 2, rng)
    assert shifted.shape == images.shape and shifted.dtype == np.uint8
    offsets = set()
    for original, moved in zip(images, shifted):
        # Some (dy, dx) within +-2 px maps the original's interior onto the shifted image's.
        found = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                 if np.array_equal(moved[2:10, 2:10], original[2 - dy:10 - dy, 2 - dx:10 - dx])]
        assert found
        offsets.add(found[0])
    assert len(offsets) > 10  # the offsets vary from image to image
    assert random_shift(images, 0, rng) is images
    with pytest.raises(ValueError, match="shift_px"):
        BCConfig(shift_px=-1)


def test_bc_from_lerobot_dataset(tmp_path: Path):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    world = PointReachWorld()
    episodes = world.demo_episodes(2, 8, np.random.default_rng(1), action_noise=0.05)
    features = {f"observation.images.{n}": {"dtype": "image", "shape": (32, 32, 3),
                                            "names": ["height", "width", "channel"]} for n in world.view_names}
    features["observation.state"] = {"dtype": "float32", "shape": (2,), "names": ["x", "y"]}
    features["action"] = {"dtype": "float32", "shape": (2,), "names": ["x", "y"]}
    dataset = LeRobotDataset.create("local/point_reach", fps=10, features=features, root=tmp_path / "ds",
                                    use_videos=False)
    for episode in episodes:
        for t in range(8):
            frame = {f"observation.images.{n}": episode.views[n][t] for n in world.view_names}
            frame.update({"observation.state": episode.states[t], "action": episode.actions[t], "task": episode.instruction})
            dataset.add_frame(frame)
        dataset.save_episode()
    dataset.finalize()
    dataset = LeRobotDataset("local/point_reach", root=tmp_path / "ds")

    arrays = bc_arrays_from_lerobot(dataset, world.view_names, chunk_size=5)
    expected = BCArrays.from_episodes(episodes, chunk_size=5)
    np.testing.assert_allclose(arrays.action_chunks, expected.action_chunks, atol=1e-6)
    np.testing.assert_allclose(arrays.states, expected.states, atol=1e-6)
    np.testing.assert_array_equal(arrays.views["head"], expected.views["head"])
    assert arrays.instructions == expected.instructions

    policy = tiny_policy()
    losses = train_bc(policy, dataset, BCConfig(steps=5, batch_size=8))
    assert len(losses) == 5 and all(math.isfinite(v) for v in losses)
    np.testing.assert_allclose(policy.action_center.numpy(), expected.actions.mean(0), atol=1e-5)


# ------------------------------------------------------------------ checkpoints
def test_save_load_roundtrip_and_sha256(tmp_path: Path):
    policy = tiny_policy()
    policy.fit_normalization(np.array([[0.0, 1.0], [2.0, 3.0]]), np.array([[1.0, -1.0], [3.0, 1.0]]))
    policy.version = "v7"
    policy.save(tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "model.safetensors"]
    loaded = load_policy(tmp_path / "ckpt")
    assert isinstance(loaded, CompactFlowVLA) and loaded.version == "v7"
    batch = toy_batch(3)
    np.testing.assert_array_equal(loaded.predict_chunks(batch), policy.predict_chunks(batch))
    torch.testing.assert_close(loaded.action_scale, torch.tensor([1.0, 1.0]))

    digest = checkpoint_sha256(tmp_path / "ckpt")
    assert len(digest) == 64 and digest == checkpoint_sha256(tmp_path / "ckpt")
    policy.save(tmp_path / "again")
    assert checkpoint_sha256(tmp_path / "again") == digest  # same weights + config -> same digest
    with torch.no_grad():
        policy.action_out.bias.add_(1e-3)
    policy.save(tmp_path / "changed")
    assert checkpoint_sha256(tmp_path / "changed") != digest


def test_load_policy_rejects_unknown_types_and_fields(tmp_path: Path):
    policy = tiny_policy()
    policy.save(tmp_path / "ckpt")
    config_path = tmp_path / "ckpt" / "config.json"
    text = config_path.read_text()
    config_path.write_text(text.replace('"compact_flow_vla"', '"pickled_thing"'))
    with pytest.raises(ValueError, match="pickled_thing"):
        load_policy(tmp_path / "ckpt")
    config_path.write_text(text.replace('"width": 32', '"width": 32, "colour": 1'))
    with pytest.raises(ValueError, match="colour"):
        load_policy(tmp_path / "ckpt")


# ------------------------------------------------------------------ Flow-SDE
def test_sde_sigmas_and_grid_for_k3():
    torch.testing.assert_close(time_grid(3), torch.tensor([1.0, 2 / 3, 1 / 3, 0.0], dtype=torch.float64))
    expected = [0.5 * math.sqrt(1 / (1 - 2 / 3)), 0.5 * math.sqrt((2 / 3) / (1 / 3)), 0.5 * math.sqrt(0.5)]
    torch.testing.assert_close(sde_sigmas(3, 0.5), torch.tensor(expected, dtype=torch.float64))


def test_transition_mean_reduces_to_euler_without_noise_and_matches_formula():
    x = torch.randn(2, 5, 2)
    v = torch.randn(2, 5, 2)
    t, t_next = torch.full((2,), 2 / 3, dtype=torch.float64), torch.full((2,), 1 / 3, dtype=torch.float64)
    mean, std = transition_mean_std(x, v, t, t_next, torch.zeros(2, dtype=torch.float64))
    torch.testing.assert_close(mean, x - (1 / 3) * v)
    assert float(std.abs().max()) == 0.0
    sigma = 0.7
    mean, std = transition_mean_std(x, v, t, t_next, torch.full((2,), sigma, dtype=torch.float64))
    x0, x1 = x - (2 / 3) * v, x + (1 / 3) * v
    torch.testing.assert_close(mean, x0 * (2 / 3) + x1 * (1 / 3 - sigma ** 2 * (1 / 3) / (2 * 2 / 3)))
    torch.testing.assert_close(std.flatten(), torch.full((2,), math.sqrt(1 / 3) * sigma))


def test_chain_log_prob_of_known_velocity_is_gaussian_density():
    """The expected densities are written out by hand (numpy, float64) from the Flow-SDE transition:
    with delta = t - t', the mean x0_hat (1 - t') + x1_hat (t' - sigma^2 delta / (2 t)) expands to
    x - delta v - sigma^2 delta / (2 t) (x + (1 - t) v), and the std is sigma sqrt(delta)."""
    config = FlowSDEConfig(num_steps=3, noise_level=0.5)

    def velocity(x, t):  # a fixed field, so the transition density is known in closed form
        return 0.5 * x + t[:, None, None]

    noise = torch.randn(4, 5, 2, generator=torch.Generator().manual_seed(0))
    index = torch.tensor([0, 1, 2, 1])
    chain = sample_chain(velocity, noise, config, index, torch.Generator().manual_seed(1))
    log_prob = chain_log_prob(velocity, chain, index, config)
    # K = 3: grid 1, 2/3, 1/3, 0; sigma_i = 0.5 sqrt(t_i / (1 - t_i)), with t_1 = 2/3 in the denominator at t = 1.
    grid = [1.0, 2 / 3, 1 / 3, 0.0]
    sigmas = [0.5 * math.sqrt(3.0), 0.5 * math.sqrt(2.0), 0.5 * math.sqrt(0.5)]
    for row in range(4):
        i = int(index[row])
        t, delta, sigma = grid[i], grid[i] - grid[i + 1], sigmas[i]
        x = chain[row, i].double().numpy()
        v = 0.5 * x + t
        mean = x - delta * v - sigma ** 2 * delta / (2 * t) * (x + (1 - t) * v)
        std = sigma * math.sqrt(delta)
        z = (chain[row, i + 1].double().numpy() - mean) / std
        expected = float(np.sum(-0.5 * z ** 2 - math.log(std) - 0.5 * math.log(2 * math.pi)))
        assert float(log_prob[row]) == pytest.approx(expected, rel=1e-5, abs=1e-4)
    # The deterministic steps of the chain are exact Euler steps: x' = x - (1/3) v.
    x = chain[0, 1].double().numpy()
    np.testing.assert_allclose(chain[0, 2].double().numpy(), x - (1 / 3) * (0.5 * x + 2 / 3), rtol=1e-5, atol=1e-6)


def test_sampled_chain_log_prob_is_reproducible_and_differentiable():
    policy = tiny_policy()
    policy.fit_normalization(np.zeros((2, 2)) + [[0, 0], [1, 1]], np.zeros((2, 2)) + [[0, 0], [1, 1]])
    batch = toy_batch(6)
    first = policy.sample_chunks(batch, torch.Generator().manual_seed(5))
    second = policy.sample_chunks(batch, torch.Generator().manual_seed(5))
    torch.testing.assert_close(first.chain, second.chain, rtol=0, atol=0)
    assert first.chain.shape == (6, 4, 5, 2) and first.actions.shape == (6, 5, 2)
    assert set(first.denoise_index.tolist()) <= {0, 1, 2}
    np.testing.assert_allclose(first.actions, policy.unnormalize_actions(first.chain[:, -1]).numpy(), atol=1e-6)

    policy.train()
    log_prob, value = policy.evaluate_chains(batch, first.chain, first.denoise_index)
    assert torch.equal(log_prob.detach(), first.log_prob)  # same chain + same params -> same log-prob, bitwise
    (log_prob.sum() + value.sum()).backward()
    actor_grads = [p.grad for p in policy.actor_parameters()]
    assert all(g is not None for g in actor_grads) and sum(float(g.abs().sum()) for g in actor_grads) > 0
    assert all(p.grad is not None for p in policy.critic_parameters())
    # By default RL trains the action expert and value head only: the prefix encoder gets no gradient.
    assert all(p.grad is None for p in policy.prefix_parameters())


def test_prefix_receives_actor_gradient_when_configured():
    policy = tiny_policy(train_prefix_in_rl=True)
    batch = toy_batch(3)
    sample = policy.sample_chunks(batch, torch.Generator().manual_seed(0))
    log_prob, _ = policy.evaluate_chains(batch, sample.chain, sample.denoise_index, with_value=False)
    log_prob.sum().backward()
    assert policy.image_encoder[0].weight.grad is not None
    assert policy.image_encoder[0].weight in set(policy.actor_parameters())


def test_stochastic_chunks_vary_while_deterministic_do_not():
    policy = tiny_policy()
    batch = toy_batch(1)
    repeated = ObsBatch({n: np.repeat(v, 8, axis=0) for n, v in batch.views.items()},
                        np.repeat(batch.states, 8, axis=0), batch.instructions * 8)
    sample = policy.sample_chunks(repeated, torch.Generator().manual_seed(0))
    assert float(np.std(sample.actions, axis=0).mean()) > 1e-3
    deterministic = policy.predict_chunks(repeated)
    assert float(np.abs(deterministic - deterministic[:1]).max()) < 1e-5
