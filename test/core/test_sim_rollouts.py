"""In-process episodes in the MuJoCo SO-101 sim: expert demos, lockstep policy rollouts, evaluation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from vla_mbpo_ros.core.data.episode import Observation
from vla_mbpo_ros.core.policy.base import ObsBatch
from vla_mbpo_ros.core.policy.bc import BCArrays
from vla_mbpo_ros.core.policy.compact import CompactFlowVLA, CompactFlowVLAConfig
from vla_mbpo_ros.core.policy.value_head import ValueHeadConfig
from vla_mbpo_ros.core.rl.start_states import StartStateSampler
from vla_mbpo_ros.core.sim import SimConfig, So101Sim
from vla_mbpo_ros.core.sim.rollouts import EpisodeConfig, evaluate_policy, expert_episodes, policy_episodes

torch.set_num_threads(1)
CHUNK = 10


@pytest.fixture(scope="module")
def sim() -> So101Sim:
    sim = So101Sim(SimConfig(image_size=(24, 24)))
    yield sim
    sim.close()


@pytest.fixture(scope="module")
def demos(sim: So101Sim) -> list[dict]:
    return expert_episodes(sim, seeds=[3, 4], config=EpisodeConfig(max_steps=150))


def random_policy() -> CompactFlowVLA:
    torch.manual_seed(0)
    policy = CompactFlowVLA(CompactFlowVLAConfig(
        image_size=24, chunk_size=CHUNK, width=32, num_heads=2, conv_channels=(8,), token_grid=2, prefix_layers=0,
        expert_layers=1, mlp_ratio=2, value_head=ValueHeadConfig((16,))))
    policy.action_scale.fill_(0.3)  # random weights: chunks of roughly +-0.3 rad around the home pose
    return policy.eval()


class StateFeedback:
    """Row-wise numpy policy (bitwise independent of the batch it is in): a chunk that moves every joint
    by a fixed step per action, its sign set by the state and the mean head-image brightness."""

    chunk_size = CHUNK
    action_dim = 6
    view_names = ("head", "wrist")
    version = "feedback"

    def predict_chunks(self, batch: ObsBatch) -> np.ndarray:
        brightness = batch.views["head"].reshape(len(batch), -1).mean(axis=1) / 255.0
        direction = np.sign(np.sin(7.0 * batch.states + brightness[:, None]))
        steps = 0.02 * np.arange(1, CHUNK + 1)[None, :, None]
        return (batch.states[:, None, :] + steps * direction[:, None, :]).astype(np.float32)


class ChunkReplay:
    """Plays back one recorded action sequence in chunks of k, the same chunk for every episode of a batch."""

    chunk_size = CHUNK
    action_dim = 6
    view_names = ("head", "wrist")
    version = "replay"

    def __init__(self, actions: np.ndarray) -> None:
        padded = -(-len(actions) // CHUNK) * CHUNK
        self.chunks = np.concatenate([actions, np.repeat(actions[-1:], padded - len(actions), 0)]).reshape(
            -1, CHUNK, actions.shape[1])
        self.calls = 0

    def predict_chunks(self, batch: ObsBatch) -> np.ndarray:
        chunk = self.chunks[min(self.calls, len(self.chunks) - 1)]
        self.calls += 1
        return np.repeat(chunk[None], len(batch), axis=0)

    def reset(self) -> None:
        self.calls = 0


class OneObservationAtATime:
    """Only the deployment interface: ``predict_chunk(Observation)`` and ``reset``."""

    def __init__(self, inner: ChunkReplay) -> None:
        self.inner = inner

    def predict_chunk(self, obs: Observation) -> np.ndarray:
        assert set(obs.views) == {"head", "wrist"} and obs.state.shape == (6,)
        return self.inner.predict_chunks(ObsBatch.from_observations([obs]))[0]

    def reset(self) -> None:
        self.inner.reset()


def test_expert_episodes_have_the_training_data_format(sim: So101Sim, demos: list[dict]):
    for demo in demos:
        length = demo.control_steps
        assert demo.success and demo.steps_to_success == length < 150  # stops at the first success
        assert demo.states.shape == demo.actions.shape == (length, 6)
        assert demo.views["head"].shape == demo.views["wrist"].shape == (length, 24, 24, 3)
        assert demo.views["head"].dtype == np.uint8 and demo.source == "scripted_expert"
        assert len(demo.sim_states) == length
    # Frame t is the observation before action t: restoring frame t's physics state gives its joint state
    # and its views (up to MuJoCo's one-substep lag of rendered geometry after mj_step).
    sim.set_state(demos[0].sim_states[40])
    np.testing.assert_array_equal(sim.joint_positions().astype(np.float32), demos[0].states[40])
    rendered = sim.render(fresh=True)["head"].astype(int)
    assert np.mean(rendered != demos[0].views["head"][40]) < 0.05
    assert np.mean(rendered != demos[0].views["head"][0]) > 0.05  # the arm has moved since frame 0

    data = BCArrays.from_episodes(demos, CHUNK)
    assert len(data) == sum(d.control_steps for d in demos)
    sampler = StartStateSampler(stride=CHUNK)
    sampler.add_episodes(demos)
    assert len(sampler) == sum(-(-d.control_steps // CHUNK) for d in demos)
    assert all(s.sim_state is not None and s.success for s in sampler.states)


def test_replaying_expert_actions_reproduces_the_success_step(sim: So101Sim, demos: list[dict]):
    demo = demos[0]
    # The demo's seed first: its episode ends at the success while the other one (the cube elsewhere, the
    # same open-loop actions miss it) goes on to max_steps in the same lockstep batch.
    result = evaluate_policy(ChunkReplay(demo.actions), sim, [demo.seed, demo.seed + 100],
                             EpisodeConfig(max_steps=120, record=False))
    assert result.successes.tolist() == [True, False] and result.success_rate == 0.5
    assert result.steps_to_success.tolist() == [demo.steps_to_success, -1]
    assert result.mean_steps_to_success() == demo.steps_to_success
    assert result.episodes == []  # evaluation keeps no frames by default
    # A deployment-only ChunkPolicy (predict_chunk per observation, no batched call) runs the same way.
    single = evaluate_policy(OneObservationAtATime(ChunkReplay(demo.actions)), sim, [demo.seed])
    assert single.steps_to_success.tolist() == [demo.steps_to_success]


def test_held_actions_record_one_frame_per_action_and_replay_to_the_same_success(sim: So101Sim):
    held = EpisodeConfig(max_steps=150, control_steps_per_action=3)
    demo = expert_episodes(sim, seeds=[3], config=held)[0]
    assert demo.success
    # One frame per action; the length and the success step count control steps (30 Hz).
    assert len(demo.actions) == len(demo.states) == -(-demo.control_steps // 3)
    assert demo.steps_to_success == demo.control_steps
    np.testing.assert_allclose(demo.sim_states[1], _state_after(sim, demo, steps=3), atol=1e-5)  # held 3 steps
    replay = evaluate_policy(ChunkReplay(demo.actions), sim, [demo.seed], dataclasses.replace(held, record=False))
    assert replay.steps_to_success.tolist() == [demo.steps_to_success]


def test_settle_frames_record_the_success_state_without_changing_the_outcome(sim: So101Sim):
    held = EpisodeConfig(max_steps=150, control_steps_per_action=3)
    plain = expert_episodes(sim, seeds=[3], config=held)[0]
    settled = expert_episodes(sim, seeds=[3], config=dataclasses.replace(held, settle_frames=4))[0]
    assert settled.success and settled.steps_to_success == plain.steps_to_success
    assert len(settled) == len(plain) + 4 and settled.control_steps == plain.control_steps
    np.testing.assert_array_equal(settled.actions[-4:], np.repeat(plain.actions[-1:], 4, axis=0))  # held
    # The cube is up in the settle frames: each replays to a success state of the simulator.
    for frame in settled.sim_states[-4:]:
        sim.set_state(frame)
        assert sim.is_success()
    # Policy rollouts settle the same way; failures get no settle frames.
    replay = policy_episodes(ChunkReplay(plain.actions), sim, [plain.seed, plain.seed + 100],
                             dataclasses.replace(held, max_steps=120, settle_frames=4))
    assert [len(e) for e in replay] == [len(plain) + 4, 40] and [e.success for e in replay] == [True, False]


def test_replaying_imagined_chunks_in_the_sim_gives_the_ground_truth_reward(sim: So101Sim):
    from vla_mbpo_ros.core.rl.rollout import replay_chunks
    from vla_mbpo_ros.core.sim.world_model import SimWorldModel, SimWorldModelConfig

    held = EpisodeConfig(max_steps=150, control_steps_per_action=3)
    demo = expert_episodes(sim, seeds=[3], config=held)[0]
    sampler = StartStateSampler(CHUNK)
    sampler.add_episode(demo)
    chunks = len(demo) // CHUNK
    actions = demo.actions[: chunks * CHUNK].reshape(1, chunks, CHUNK, -1)
    world = SimWorldModel(sim, SimWorldModelConfig(control_steps_per_action=3))
    rewards = replay_chunks(world, sampler.states[:1], actions)
    # The demo succeeded during action steps_to_success / 3 (1-based), i.e. in that action's chunk.
    success_chunk = (demo.steps_to_success - 1) // 3 // CHUNK
    expected = np.zeros((1, chunks), np.float32)
    if success_chunk < chunks:
        expected[0, success_chunk] = 1.0
    np.testing.assert_array_equal(rewards, expected)
    with pytest.raises(ValueError, match=r"\(M, n, k, d\)"):
        replay_chunks(world, sampler.states[:1], actions[0])


def _state_after(sim: So101Sim, demo: dict, steps: int) -> np.ndarray:
    sim.set_state(demo.sim_states[0])
    sim.set_joint_targets(demo.actions[0])
    for _ in range(steps):
        sim.step()
    return sim.get_state()


def test_lockstep_batches_equal_one_episode_at_a_time(sim: So101Sim):
    config = EpisodeConfig(max_steps=25, batch_size=3)
    together = policy_episodes(StateFeedback(), sim, [5, 6, 7], config)
    alone = policy_episodes(StateFeedback(), sim, [5, 6, 7], EpisodeConfig(max_steps=25, batch_size=1))
    for a, b in zip(together, alone):
        assert a.control_steps == b.control_steps == 25 and not a.success  # max_steps need not be a chunk multiple
        np.testing.assert_array_equal(a.views["wrist"], b.views["wrist"])
        np.testing.assert_array_equal(a.actions, b.actions)
        np.testing.assert_array_equal(a.sim_states, b.sim_states)
    assert not np.array_equal(together[0].views["head"], together[1].views["head"])  # seeds differ


def test_chunks_are_executed_open_loop_from_chunk_start_observations(sim: So101Sim):
    policy = random_policy()
    config = EpisodeConfig(max_steps=30)
    episode = policy_episodes(policy, sim, [5], config)[0]
    for start in (0, 10, 20):  # steps start..start+9 are the policy's chunk for frame start
        frame = ObsBatch(views={n: v[start:start + 1] for n, v in episode.views.items()},
                         states=episode.states[start:start + 1], instructions=[config.instruction])
        np.testing.assert_allclose(episode.actions[start:start + CHUNK], policy.predict_chunks(frame)[0],
                                   atol=1e-5)
    assert np.abs(episode.states[-1] - episode.states[0]).max() > 1e-2  # the arm followed the chunks


def test_flow_sde_exploration_is_seeded(sim: So101Sim):
    policy = random_policy()
    config = EpisodeConfig(max_steps=20, record=True)
    first = policy_episodes(policy, sim, [8], config, generator=torch.Generator().manual_seed(1))
    again = policy_episodes(policy, sim, [8], config, generator=torch.Generator().manual_seed(1))
    other = policy_episodes(policy, sim, [8], config, generator=torch.Generator().manual_seed(2))
    np.testing.assert_array_equal(first[0].actions, again[0].actions)
    assert not np.array_equal(first[0].actions, other[0].actions)
    outcome_only = policy_episodes(policy, sim, [8], EpisodeConfig(max_steps=20, record=False))[0]
    assert len(outcome_only) == 0 and not outcome_only.views and outcome_only.control_steps == 20


def test_episode_config_errors_name_the_field():
    with pytest.raises(ValueError, match="max_steps"):
        EpisodeConfig(max_steps=0)
    with pytest.raises(ValueError, match="batch_size"):
        EpisodeConfig(batch_size=0)
    with pytest.raises(ValueError, match="control_steps_per_action"):
        EpisodeConfig(control_steps_per_action=0)
