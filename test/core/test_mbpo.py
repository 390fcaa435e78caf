"""Tests of the VLA-MBPO machinery: GAE, branched rollouts with termination, PPO, the outer loop."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from toy_world import PointReachWorld

from vla_mbpo_ros.core.policy.bc import BCArrays, BCConfig, train_bc
from vla_mbpo_ros.core.policy.compact import CompactFlowVLA, CompactFlowVLAConfig
from vla_mbpo_ros.core.policy.value_head import ValueHeadConfig
from vla_mbpo_ros.core.rl.gae import chunk_discount, chunk_gae, normalize_advantages, valid_steps
from vla_mbpo_ros.core.rl.ppo import PPOConfig, actor_loss, value_loss
from vla_mbpo_ros.core.rl.rollout import branched_rollout
from vla_mbpo_ros.core.rl.start_states import StartState, StartStateSampler
from vla_mbpo_ros.core.rl.trainer import MBPOConfig, MBPOTrainer, group_advantages
from vla_mbpo_ros.core.rl.world_model import StatefulWorldModel, WorldModel

torch.set_num_threads(1)


def tiny_policy(seed: int = 0) -> CompactFlowVLA:
    torch.manual_seed(seed)
    policy = CompactFlowVLA(CompactFlowVLAConfig(
        view_names=("head", "wrist"), image_size=32, state_dim=2, action_dim=2, chunk_size=5, width=32, num_heads=2,
        conv_channels=(16,), token_grid=2, prefix_layers=1, expert_layers=1, mlp_ratio=2,
        value_head=ValueHeadConfig((64, 64))))
    policy.eval()
    return policy


def toy_sampler(world: PointReachWorld, episodes: int = 8, seed: int = 0) -> StartStateSampler:
    sampler = StartStateSampler(stride=world.config.chunk_size)
    sampler.add_episodes(world.demo_episodes(episodes, 10, np.random.default_rng(seed), action_noise=0.1))
    return sampler


# ------------------------------------------------------------------ GAE
def test_gae_matches_hand_computed_example_with_termination():
    rewards = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    values = torch.tensor([[0.5, 0.6, 0.7], [0.2, 0.3, 0.4]])
    dones = torch.tensor([[False, True, False], [False, False, False]])
    bootstrap = torch.tensor([0.8, 0.5])
    advantages, returns, valid = chunk_gae(rewards, values, bootstrap, dones, discount=0.9, lam=0.5)
    # Branch 0 terminates at step 1: no bootstrap through it, step 2 is masked.
    #   A1 = 1 - 0.6 = 0.4;  A0 = (0.9*0.6 - 0.5) + 0.9*0.5*0.4 = 0.22
    # Branch 1 bootstraps from V = 0.5:
    #   A2 = 0.9*0.5 - 0.4 = 0.05;  A1 = 0.06 + 0.45*0.05 = 0.0825;  A0 = 0.07 + 0.45*0.0825 = 0.107125
    torch.testing.assert_close(advantages, torch.tensor([[0.22, 0.4, 0.0], [0.107125, 0.0825, 0.05]]))
    torch.testing.assert_close(returns, torch.tensor([[0.72, 1.0, 0.0], [0.307125, 0.3825, 0.45]]))
    assert valid.tolist() == [[True, True, False], [True, True, True]]


def test_discount_switch_and_validity():
    assert chunk_discount(0.99, 10, discount_per_step=False) == 0.99
    assert chunk_discount(0.99, 10, discount_per_step=True) == pytest.approx(0.99 ** 10)
    with pytest.raises(ValueError, match="gamma"):
        chunk_discount(1.5, 10, False)
    dones = torch.tensor([[True, True, False], [False, False, True]])
    assert valid_steps(dones).tolist() == [[True, False, False], [True, True, True]]


def test_advantage_normalisation_uses_valid_steps_only():
    advantages = torch.tensor([[1.0, 3.0, 100.0], [5.0, 7.0, -100.0]])
    valid = torch.tensor([[True, True, False], [True, True, False]])
    normalized = normalize_advantages(advantages, valid)
    selected = normalized[valid]
    assert abs(float(selected.mean())) < 1e-6 and abs(float(selected.std(unbiased=False)) - 1.0) < 1e-5
    assert normalized[~valid].abs().max() == 0


# ------------------------------------------------------------------ PPO losses
def test_actor_loss_clips_both_sides():
    old = torch.zeros(2)
    new = torch.log(torch.tensor([1.5, 0.5]))
    advantages = torch.tensor([1.0, -1.0])
    loss, stats = actor_loss(new, old, advantages, torch.ones(2, dtype=torch.bool), clip_low=0.1, clip_high=0.1)
    # Sample 0: min(1.5, 1.1) * 1 = 1.1; sample 1: min(0.5 * -1, 0.9 * -1) = -0.9 -> loss mean(-1.1, 0.9)
    assert float(loss) == pytest.approx((-1.1 + 0.9) / 2)
    assert stats["clip_fraction"] == 1.0
    masked, _ = actor_loss(new, old, advantages, torch.tensor([True, False]), 0.1, 0.1)
    assert float(masked) == pytest.approx(-1.1)


def test_value_loss_is_clipped_huber():
    mask = torch.ones(1, dtype=torch.bool)
    # Clipped candidate 1.5 is further from the return 3: max(0.5 * 1^2, 0.5 * 1.5^2) = 1.125
    assert float(value_loss(torch.tensor([2.0]), torch.tensor([1.0]), torch.tensor([3.0]), mask, 0.5, 10.0)) \
        == pytest.approx(1.125)
    # Huber's linear branch: delta * (|e| - delta / 2)
    assert float(value_loss(torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([30.0]), mask, 0.5, 10.0)) \
        == pytest.approx(10.0 * (30.0 - 5.0))


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="clip_low"):
        PPOConfig(clip_low=0.0)
    with pytest.raises(ValueError, match="rollout_mode"):
        MBPOConfig(rollout_mode="sideways")
    with pytest.raises(ValueError, match="update_to_data"):
        MBPOConfig(update_to_data=0)
    with pytest.raises(ValueError, match="bogus"):
        MBPOConfig.from_dict({"bogus": 1})
    for field, value in (("validation_from", "middle"), ("advantage_estimator", "vtrace"), ("group_size", 0)):
        with pytest.raises(ValueError, match=field):
            MBPOConfig(**{field: value})
    with pytest.raises(ValueError, match="group_size"):
        MBPOConfig(advantage_estimator="group", group_size=1)
    with pytest.raises(ValueError, match="target_kl"):
        PPOConfig(target_kl=-1.0)


def test_validation_from_initial_states_uses_episode_starts_only():
    world = ScriptedStatefulWorld([set()] * 4)
    sampler = toy_sampler(world.inner)
    config = MBPOConfig(validation_starts=6, validation_chunks=2, validation_from="initial")
    trainer = MBPOTrainer(tiny_policy(), world, sampler, config)
    firsts = {s.state.tobytes() for s in sampler.initial_states()}
    seen = []
    world.begin_branches = lambda starts: seen.extend(starts)
    assert trainer.validation_success() == 0.0
    assert len(seen) == 6 and all(s.state.tobytes() in firsts for s in seen)


# ------------------------------------------------------------------ rollouts
class ScriptedRewardWorld:
    """World model test double: the reward of each call is scripted by branch instruction."""

    def __init__(self, schedule: list[set[str]]) -> None:
        self.inner = PointReachWorld()
        self.schedule = schedule
        self.batch_sizes: list[int] = []

    def step(self, views, chunks, instructions):
        call = len(self.batch_sizes)
        self.batch_sizes.append(len(chunks))
        next_views, _ = self.inner.step(views, chunks, instructions)
        return next_views, np.array([float(i in self.schedule[call]) for i in instructions], dtype=np.float32)


class ScriptedStatefulWorld(ScriptedRewardWorld):
    def begin_branches(self, start_states) -> None:
        self.started = len(start_states)


def _branch_starts(world: PointReachWorld, count: int) -> list[StartState]:
    positions = world.initial_positions(count, np.random.default_rng(0))
    views = world.render(positions)
    return [StartState(views={n: v[i] for n, v in views.items()}, state=positions[i], instruction=f"b{i}")
            for i in range(count)]


@pytest.mark.parametrize("stateful", [False, True])
def test_branches_are_masked_after_termination(stateful):
    schedule = [{"b0"}, {"b0", "b1"}, {"b0", "b1", "b2"}]
    world = ScriptedStatefulWorld(schedule) if stateful else ScriptedRewardWorld(schedule)
    assert isinstance(world, WorldModel) and isinstance(world, StatefulWorldModel) == stateful
    starts = _branch_starts(world.inner, 4)
    buffer = branched_rollout(tiny_policy(), world, starts, num_chunks=3, generator=torch.Generator().manual_seed(0))
    assert buffer.rewards.tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]]
    assert buffer.dones.tolist() == [[True, False, False], [False, True, False], [False, False, True],
                                     [False, False, False]]
    assert buffer.valid.tolist() == [[True, False, False], [True, True, False], [True, True, True],
                                     [True, True, True]]
    # A stateless world model only steps live branches; a stateful one keeps row = branch.
    assert world.batch_sizes == ([4, 4, 4] if stateful else [4, 3, 2])
    assert buffer.success_rate() == 0.75
    assert buffer.chains.shape == (4, 3, 4, 5, 2) and buffer.observations.states.shape == (12, 2)
    # Imagined observations keep the start joint state (the world model returns images only).
    np.testing.assert_array_equal(buffer.observations.states[8:], buffer.observations.states[:4])
    assert not np.array_equal(buffer.observations.views["head"][4], buffer.observations.views["head"][0])


def test_ppo_ratio_is_one_before_the_first_update():
    world = PointReachWorld()
    policy = tiny_policy()
    buffer = branched_rollout(policy, world, _branch_starts(world, 6), 2, torch.Generator().manual_seed(3))
    policy.train()
    for chunk in range(2):
        rows = np.arange(chunk * 6, (chunk + 1) * 6)
        log_probs, values = policy.evaluate_chains(buffer.observations.select(rows), buffer.chains[:, chunk],
                                                   buffer.denoise_index[:, chunk])
        assert torch.equal(torch.exp(log_probs.detach() - buffer.log_probs[:, chunk]), torch.ones(6))
        assert torch.equal(values.detach(), buffer.values[:, chunk])

    # Through the trainer: the first update is an actor update on a shuffled minibatch.
    config = MBPOConfig(num_iterations=1, samples_per_refill=24, update_to_data=1, minibatch_size=16,
                        critic_warmup_updates=0, validation_starts=0, ppo=PPOConfig(actor_lr=1e-3))
    trainer = MBPOTrainer(tiny_policy(), world, toy_sampler(world), config)
    stats = trainer.iteration()
    assert abs(stats["ratio_mean"] - 1.0) < 1e-5 and stats["clip_fraction"] == 0.0
    assert abs(stats["approx_kl"]) < 1e-6


def test_critic_warmup_leaves_the_actor_untouched_and_recompute_matches():
    world = PointReachWorld()
    policy = tiny_policy()
    # Small rollout batches: the buffer is concatenated from parts, and recomputed values must line up.
    config = MBPOConfig(num_iterations=1, samples_per_refill=16, update_to_data=2, minibatch_size=16,
                        critic_warmup_updates=2, validation_starts=0, rollout_batch_size=3)
    trainer = MBPOTrainer(policy, world, toy_sampler(world), config)
    buffer = trainer.collect()
    values, bootstrap = trainer.recompute_values(buffer)
    torch.testing.assert_close(values, buffer.values)
    torch.testing.assert_close(bootstrap, buffer.bootstrap_values)
    actor_before = [p.detach().clone() for p in policy.actor_parameters()]
    critic_before = [p.detach().clone() for p in policy.critic_parameters()]
    stats = trainer.iteration()
    assert "actor_loss" not in stats
    assert all(torch.equal(a, p) for a, p in zip(actor_before, policy.actor_parameters()))
    assert any(not torch.equal(c, p) for c, p in zip(critic_before, policy.critic_parameters()))


class NoRewardWorld(PointReachWorld):
    """The point world with its reward switched off (a world model whose reward head never fires)."""

    def step(self, views, chunks, instructions):
        next_views, rewards = super().step(views, chunks, instructions)
        return next_views, np.zeros_like(rewards)


@pytest.mark.parametrize("actor_needs_reward", [True, False])
def test_a_refill_without_reward_trains_only_the_critic(actor_needs_reward):
    world = NoRewardWorld()
    policy = tiny_policy()
    config = MBPOConfig(num_iterations=1, samples_per_refill=16, update_to_data=2, minibatch_size=16,
                        critic_warmup_updates=0, validation_starts=0, actor_needs_reward=actor_needs_reward,
                        ppo=PPOConfig(actor_lr=1e-3))
    actor_before = [p.detach().clone() for p in policy.actor_parameters()]
    stats = MBPOTrainer(policy, world, toy_sampler(world), config).iteration()
    assert stats["imagined_success"] == 0.0
    actor_moved = any(not torch.equal(a, p) for a, p in zip(actor_before, policy.actor_parameters()))
    assert actor_moved == (not actor_needs_reward) == ("actor_loss" in stats)
    assert stats["actor_updated"] == float(not actor_needs_reward)


def test_group_advantage_is_the_return_minus_the_other_branches_mean():
    # Two groups of three branches, two chunks; branch 1 succeeds in chunk 2, branch 3 in chunk 1.
    rewards = torch.tensor([[0.0, 0.0], [0.0, 1.0], [0.0, 0.0], [1.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    valid = valid_steps(rewards > 0)
    adv = group_advantages(rewards, valid, group_size=3, discount=0.5)
    # Returns 0, 0.5, 0 | 1, 0, 0; leave-one-out means 0.25, 0, 0.25 | 0, 0.5, 0.5.
    expected = torch.tensor([[-0.25, -0.25], [0.5, 0.5], [-0.25, -0.25], [1.0, 0.0], [-0.5, -0.5], [-0.5, -0.5]])
    torch.testing.assert_close(adv, expected)
    with pytest.raises(ValueError, match="groups of 4"):
        group_advantages(rewards, valid, group_size=4, discount=0.5)


def test_group_branches_share_start_states_and_a_group_without_contrast_teaches_nothing():
    world = PointReachWorld()
    config = MBPOConfig(num_iterations=1, samples_per_refill=24, num_chunks=2, update_to_data=1, minibatch_size=24,
                        critic_warmup_updates=0, validation_starts=0, advantage_estimator="group", group_size=4)
    trainer = MBPOTrainer(tiny_policy(), world, toy_sampler(world), config)
    buffer = trainer.collect()
    assert buffer.num_branches == 12
    heads = buffer.observations.views["head"][:12]
    for group in range(3):
        assert all(np.array_equal(heads[4 * group], heads[4 * group + i]) for i in range(4))
    targets = trainer.advantages(buffer, buffer.values, buffer.bootstrap_values)
    success = buffer.dones.any(dim=1).view(3, 4)
    for group in range(3):
        if bool(success[group].all()) or not bool(success[group].any()):
            assert torch.all(targets.advantages.view(3, 4, 2)[group] == 0)


def test_the_kl_early_stop_ends_the_actor_steps_of_a_refill():
    world = PointReachWorld()
    policy = tiny_policy()
    # A large step: the first actor update's KL is far above a tiny target, so no second one follows.
    config = MBPOConfig(num_iterations=1, samples_per_refill=32, update_to_data=4, minibatch_size=32,
                        critic_warmup_updates=0, validation_starts=0, actor_needs_reward=False,
                        ppo=PPOConfig(actor_lr=3e-2, target_kl=1e-6))
    stats = MBPOTrainer(policy, world, toy_sampler(world), config).iteration()
    assert stats["kl_stopped_at"] >= 0 and stats["actor_steps"] == stats["kl_stopped_at"] + 1 < 4
    assert stats["ratio_min"] <= 1.0 <= stats["ratio_max"] and stats["sde_sigma_max"] > 0


def test_the_bc_anchor_needs_demonstrations_and_is_logged():
    world = PointReachWorld()
    demos = world.demo_episodes(4, 10, np.random.default_rng(0))
    config = MBPOConfig(num_iterations=1, samples_per_refill=16, update_to_data=1, minibatch_size=16,
                        critic_warmup_updates=0, validation_starts=0, actor_needs_reward=False, bc_anchor_coef=0.5)
    with pytest.raises(ValueError, match="anchor"):
        MBPOTrainer(tiny_policy(), world, toy_sampler(world), config)
    policy = tiny_policy()
    stats = MBPOTrainer(policy, world, toy_sampler(world), config, anchor=BCArrays.from_episodes(demos, 5)).iteration()
    assert math.isfinite(stats["anchor_loss"]) and stats["anchor_loss"] > 0
    assert all(p.grad is None for p in policy.prefix_parameters()), "the anchor must not leave stale gradients"


def test_no_update_is_accepted_on_zero_to_zero_validation_and_the_actor_is_rolled_back():
    world = NoRewardWorld()
    policy = tiny_policy()
    before = [p.detach().clone() for p in policy.parameters()]
    config = MBPOConfig(num_iterations=1, samples_per_refill=16, update_to_data=2, minibatch_size=16,
                        critic_warmup_updates=0, validation_starts=4, actor_needs_reward=False,
                        ppo=PPOConfig(actor_lr=1e-3))
    result = MBPOTrainer(policy, world, toy_sampler(world), config).train()
    assert (result["success_before"], result["success_after"], result["accepted"]) == (0.0, 0.0, False)
    assert result["reason"] == "imagined success 0.00 -> 0.00: no success to show"
    assert result["history"][0]["actor_steps"] >= 1  # the actor did move before the rollback
    assert all(torch.equal(b, p) for b, p in zip(before, policy.parameters()))


class AlwaysSuccessWorld(PointReachWorld):
    """The point world whose reward fires on every chunk (a world model that imagines every branch succeeding)."""

    def step(self, views, chunks, instructions):
        next_views, rewards = super().step(views, chunks, instructions)
        return next_views, np.ones_like(rewards)


def test_a_world_model_that_imagines_the_running_policy_far_better_than_it_is_gets_no_say():
    world = AlwaysSuccessWorld()
    config = MBPOConfig(num_iterations=1, samples_per_refill=16, update_to_data=2, minibatch_size=16,
                        critic_warmup_updates=0, validation_starts=4, actor_needs_reward=False,
                        calibrated_validation=True, ppo=PPOConfig(actor_lr=1e-3))
    policy = tiny_policy()
    before = [p.detach().clone() for p in policy.parameters()]
    result = MBPOTrainer(policy, world, toy_sampler(world), config).train(real_success=(2, 10))
    assert result["success_before"] == 1.0 and not result["accepted"] and result["calibrated"] is False
    assert result["reason"] == ("imagination not calibrated: imagined success 1.00 of the running policy, "
                                "real 2/10 [0.06, 0.51]")
    assert result["history"] == []  # held before any RL: nothing trained
    assert all(torch.equal(b, p) for b, p in zip(before, policy.parameters()))
    # Not measured is not calibrated either; with real success to match, the RL runs.
    assert not MBPOTrainer(policy, world, toy_sampler(world), config).train()["accepted"]
    result = MBPOTrainer(policy, world, toy_sampler(world), config).train(real_success=(10, 10))
    assert len(result["history"]) == 1 and "calibrated" not in result
    with pytest.raises(ValueError, match="validation_starts"):
        MBPOConfig(calibrated_validation=True, validation_starts=0)


def test_full_horizon_mode_uses_episode_starts_and_respects_the_episode_budget():
    world = PointReachWorld()
    sampler = toy_sampler(world)
    config = MBPOConfig(num_iterations=5, samples_per_refill=64, rollout_mode="full_horizon", full_horizon_chunks=2,
                        update_to_data=1, minibatch_size=32, critic_warmup_updates=0, episode_budget=40,
                        validation_starts=0)
    trainer = MBPOTrainer(tiny_policy(), world, sampler, config)
    starts = trainer._draw_start_states(20)
    assert all(s.frame_index == 0 for s in starts)
    result = trainer.train()
    assert trainer.episodes_used == 40 and len(result["history"]) == 2


def test_start_state_sampler_takes_chunk_aligned_frames():
    world = PointReachWorld()
    sampler = StartStateSampler(stride=5)
    demo = dataclasses.replace(world.demo_episodes(1, 23, np.random.default_rng(0))[0], success=True)
    rollout = dataclasses.replace(world.demo_episodes(1, 7, np.random.default_rng(1))[0], source="policy", success=False)
    sampler.add_episodes([demo, rollout])
    assert [(s.episode_index, s.frame_index) for s in sampler.states] == [
        (0, 0), (0, 5), (0, 10), (0, 15), (0, 20), (1, 0), (1, 5)]
    np.testing.assert_array_equal(sampler.states[2].state, demo.states[10])
    np.testing.assert_array_equal(sampler.states[6].views["head"], rollout.views["head"][5])
    drawn = sampler.sample(200, np.random.default_rng(0))
    assert {(s.source, s.success) for s in drawn} == {("demo", True), ("policy", False)}
    assert len(sampler.initial_states()) == 2


def test_toy_world_decodes_its_own_renderings():
    world = PointReachWorld()
    positions = world.initial_positions(50, np.random.default_rng(0))
    decoded = world.decode_positions(world.render(positions)["head"])
    assert np.abs(decoded - positions).max() <= 1.0 / (world.config.image_size - 1) + 1e-6


# ------------------------------------------------------------------ end to end (easy setting)
def test_mbpo_raises_success_of_a_biased_bc_policy_in_the_point_world():
    world = PointReachWorld()
    rng = np.random.default_rng(0)
    # The demonstrator aims 0.3 to the right of the goal: BC inherits the bias and mostly fails.
    episodes = world.demo_episodes(32, 10, rng, target_offset=(0.3, 0.0), action_noise=0.15)
    policy = tiny_policy()
    train_bc(policy, BCArrays.from_episodes(episodes, 5), BCConfig(steps=150, batch_size=64, learning_rate=3e-3))
    sampler = StartStateSampler(stride=5)
    sampler.add_episodes(episodes)
    # Learning rates and clip are raised for this tiny model so that a few iterations show the effect.
    config = MBPOConfig(num_iterations=10, samples_per_refill=256, update_to_data=10, minibatch_size=128,
                        critic_warmup_updates=2, recompute_every=5, validation_starts=64,
                        ppo=PPOConfig(actor_lr=3e-3, critic_lr=3e-3, clip_low=0.2, clip_high=0.2))
    result = MBPOTrainer(policy, world, sampler, config).train()
    # Seeds 0-3 measured: before 0.20-0.36, after 0.63-0.92.
    assert result["success_before"] < 0.45
    assert result["success_after"] > result["success_before"] + 0.25
    assert result["accepted"]
    assert all(math.isfinite(h["value_loss"]) for h in result["history"])


# ------------------------------------------------------------------ simulator as ground-truth world model
def test_sim_world_model_restores_branch_states_and_returns_true_joint_states():
    from vla_mbpo_ros.core.sim import SimConfig, So101Sim
    from vla_mbpo_ros.core.sim.world_model import SimWorldModel, sim_start_states

    sim = So101Sim(SimConfig(image_size=(32, 32)))
    starts = sim_start_states(sim, seeds=[0, 1], instruction="pick up the cube")
    assert not np.array_equal(starts[0].sim_state, starts[1].sim_state)
    world = SimWorldModel(sim)
    assert isinstance(world, StatefulWorldModel)
    torch.manual_seed(0)
    policy = CompactFlowVLA(CompactFlowVLAConfig(
        view_names=("head", "wrist"), image_size=32, state_dim=6, action_dim=6, chunk_size=3, width=32, num_heads=2,
        conv_channels=(16,), token_grid=2, prefix_layers=0, expert_layers=1, mlp_ratio=2,
        value_head=ValueHeadConfig((16,))))
    policy.action_scale.fill_(0.3)  # random-weight policy, chunks of about +-0.3 rad around home
    first = branched_rollout(policy, world, starts, 2, torch.Generator().manual_seed(0))
    second = branched_rollout(policy, world, starts, 2, torch.Generator().manual_seed(0))
    # Same start states + same chunks -> identical outcomes: every branch restarts from its sim_state.
    np.testing.assert_array_equal(first.observations.views["head"], second.observations.views["head"])
    moved = first.observations.states[2:]  # joint states after chunk 0 come from the simulator
    assert np.abs(moved - first.observations.states[:2]).max() > 1e-3
    assert first.rewards.tolist() == [[0.0, 0.0], [0.0, 0.0]]  # random chunks don't lift the cube
    with pytest.raises(ValueError, match="sim_state"):
        world.begin_branches([StartState(views=starts[0].views, state=starts[0].state, instruction="x")])


def test_the_gpu_setup_holds_the_paper_defaults():
    """config/finetune_gpu.yaml states the paper's values; the config classes' defaults are the same."""
    from pathlib import Path

    from vla_mbpo_ros.core.loop.pipeline import PipelineConfig

    config = PipelineConfig.from_yaml(Path(__file__).resolve().parents[2] / "config" / "finetune_gpu.yaml")
    assert config.mbpo == MBPOConfig()
    assert (config.policy.backend, config.world_model.data.chunk_size, config.mbpo.samples_per_refill) == ("pi05", 10, 512)
    sde, value_head = config.policy.lerobot.sde, config.policy.lerobot.value_head
    assert (sde.num_steps, sde.noise_level, value_head.hidden_sizes) == (3, 0.5, (1024, 512, 256, 128))
    assert (config.world_model.train.lr, config.world_model.train.answer_loss_weight) == (2e-5, 0.01)
    assert (config.devices.policy, config.devices.dtype) == ("cuda", "bfloat16")
    compact = CompactFlowVLAConfig()
    assert (compact.chunk_size, compact.sde.num_steps, compact.sde.noise_level) == (10, 3, 0.5)
