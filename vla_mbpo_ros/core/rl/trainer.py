"""VLA-MBPO policy optimisation loop (and the baselines that share it).

One iteration = refill the imagined buffer with branched rollouts from real start states, compute
chunk-level GAE, then ``update_to_data`` PPO steps on minibatches of valid transitions: the first
``critic_warmup_updates`` are critic-only, and values/advantages are recomputed with the current critic
every ``recompute_every`` updates. Modes:
- "branched": VLA-MBPO (n chunks from uniformly sampled chunk-aligned real frames);
- "full_horizon": imagination from episode starts for ``full_horizon_chunks`` chunks (WMPO-style baseline);
  with the simulator as world model and ``episode_budget`` set, this is model-free PPO in the simulator
  with a real-episode budget.
The BC-only baseline is ``policy.bc.train_bc`` with no RL.

Several processes (torchrun / accelerate launch; core.util.distributed): ``samples_per_refill`` and
``minibatch_size`` are totals over all processes, each process rolls out its share from its own
random stream and normalises its own advantages, the PPO gradients are averaged (ppo.PPOUpdater),
and the decisions that branch (actor update or critic only, accept or roll back) are reduced first,
so every process keeps identical weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from vla_mbpo_ros.core.rl.acceptance import accept_update, imagination_calibrated
from vla_mbpo_ros.core.rl.gae import chunk_discount, chunk_gae, normalize_advantages
from vla_mbpo_ros.core.rl.ppo import PPOConfig, PPOUpdater
from vla_mbpo_ros.core.rl.rollout import RolloutBuffer, branched_rollout, deterministic_success_rate
from vla_mbpo_ros.core.rl.start_states import StartStateSampler
from vla_mbpo_ros.core.util import distributed
from vla_mbpo_ros.core.util.config import load_config, read_params


@dataclass
class MBPOConfig:
    num_iterations: int = 15  # buffer refills
    samples_per_refill: int = 512  # imagined transitions per refill (all processes); branches = samples // chunks per branch
    num_chunks: int = 2  # n, chunks per branch
    rollout_mode: str = "branched"  # "branched" or "full_horizon"
    full_horizon_chunks: int = 20  # chunks per branch in full_horizon mode
    rollout_batch_size: int = 64  # branches per policy / world-model call
    update_to_data: int = 20  # PPO steps per refill
    minibatch_size: int = 512  # transitions per PPO step, all processes (drawn without replacement from valid ones)
    critic_warmup_updates: int = 10  # critic-only steps right after each refill
    recompute_every: int = 10  # recompute values and advantages with the current critic every N updates
    gamma: float = 0.99
    gae_lambda: float = 0.95
    discount_per_step: bool = False  # True: gamma ** k per chunk (paper); False: gamma per chunk (code)
    normalize_advantages: bool = True
    # "gae": chunk-level GAE with the critic (the paper); "group": every start state is branched
    # ``group_size`` times and a branch's advantage is its return minus the mean return of the other
    # branches of its start state (leave-one-out, GRPO-style: no critic in the actor's signal, and a
    # start state whose branches all fail or all succeed teaches nothing instead of critic noise).
    advantage_estimator: str = "gae"
    group_size: int = 1  # branches per start state (>= 2 for "group")
    # A refill without a single reward has advantages that are critic noise, which normalisation scales up to
    # unit size: train only the critic on it rather than let the actor drift.
    actor_needs_reward: bool = True
    episode_budget: int = 0  # >0: stop once this many branches (episodes) were rolled out (model-free PPO)
    validation_starts: int = 64  # start states for the deterministic success check before/after training
    validation_chunks: int = 2
    # Where validation starts: "sampled" (chunk-aligned frames, as the rollouts) or "initial" (the episodes'
    # first frames, with validation_chunks covering a whole episode): the learning bench measured that
    # 2-chunk success from sampled frames stayed flat while the success of whole episodes fell to 0.
    validation_from: str = "sampled"
    rollback_on_drop: bool = True  # restore the pre-RL weights if the candidate is not accepted
    # Accept a candidate only when its validation success is above zero and the old one's below one (0 -> 0
    # and 1 -> 1 are no evidence). The plumbing tests turn it off to publish an actor-frozen candidate of a
    # tiny untrained policy.
    require_validation_success: bool = True
    # Before any RL, hold unless the running policy's imagined validation success lies in the Wilson 95 %
    # interval of its real success (``train(real_success=...)``): the learning bench measured the UMM's
    # transition reward imagining 0.86-1.00 for policies that succeeded in 1-4 of 10 real episodes, and the
    # updates accepted there moved seeds -20 to +44 points. Off by default: it compares the deterministic
    # validation with real episodes that explore, and so also held 4 of 10 sim-as-world-model iterations.
    calibrated_validation: bool = False
    # Flow-matching (BC) loss on the demonstrations added to every actor step with this weight (0: off;
    # needs the trainer's ``anchor`` data): keeps the policy near what it imitated while RL moves it.
    bc_anchor_coef: float = 0.0
    bc_anchor_batch: int = 32
    seed: int = 0
    ppo: PPOConfig = field(default_factory=PPOConfig)

    def __post_init__(self) -> None:
        if isinstance(self.ppo, dict):
            self.ppo = PPOConfig(**self.ppo)
        for name in ("num_iterations", "samples_per_refill", "num_chunks", "full_horizon_chunks",
                     "rollout_batch_size", "update_to_data", "minibatch_size", "recompute_every",
                     "validation_chunks"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("critic_warmup_updates", "episode_budget", "validation_starts"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.advantage_estimator not in ("gae", "group"):
            raise ValueError(f"advantage_estimator must be 'gae' or 'group', got {self.advantage_estimator!r}")
        if self.group_size < 1 or (self.advantage_estimator == "group" and self.group_size < 2):
            raise ValueError(f"group_size must be >= 2 for group advantages (>= 1 otherwise), got {self.group_size}")
        if self.bc_anchor_coef < 0 or self.bc_anchor_batch <= 0:
            raise ValueError(f"bc_anchor_coef must be >= 0 and bc_anchor_batch > 0, got {self.bc_anchor_coef}, "
                             f"{self.bc_anchor_batch}")
        if self.validation_from not in ("sampled", "initial"):
            raise ValueError(f"validation_from must be 'sampled' or 'initial', got {self.validation_from!r}")
        if self.calibrated_validation and not self.validation_starts:
            raise ValueError("calibrated_validation compares the validation success with real success: it needs "
                             "validation_starts > 0")
        if self.rollout_mode not in ("branched", "full_horizon"):
            raise ValueError(f"rollout_mode must be 'branched' or 'full_horizon', got {self.rollout_mode!r}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma}")
        if not 0.0 <= self.gae_lambda <= 1.0:
            raise ValueError(f"gae_lambda must be in [0, 1], got {self.gae_lambda}")

    @property
    def chunks_per_branch(self) -> int:
        return self.num_chunks if self.rollout_mode == "branched" else self.full_horizon_chunks

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MBPOConfig":
        return load_config(cls, data, "mbpo")

    @classmethod
    def from_yaml(cls, path: str | Path, node_name: str = "world_model_node", prefix: str = "mbpo") -> "MBPOConfig":
        """Read a plain mapping of fields, or a ROS 2 params file (``<node_name>: ros__parameters: <prefix>:``)."""
        return cls.from_dict(read_params(path, node_name, prefix))


def explained_variance(values: torch.Tensor, returns: torch.Tensor, valid: torch.Tensor) -> float:
    """1 - Var(returns - values) / Var(returns) over valid steps (CleanRL's critic diagnostic; nan if flat)."""
    v, r = values[valid].double(), returns[valid].double()
    variance = r.var(unbiased=False) if len(r) > 1 else torch.tensor(0.0)
    return float("nan") if variance == 0 else float(1.0 - (r - v).var(unbiased=False) / variance)


@dataclass
class Advantages:
    advantages: torch.Tensor  # (M, n), normalized if configured
    returns: torch.Tensor  # (M, n)
    values: torch.Tensor  # (M, n) the values the targets were computed with (old values for clipping)
    valid: torch.Tensor  # (M, n)


def group_advantages(rewards: torch.Tensor, valid: torch.Tensor, group_size: int, discount: float) -> torch.Tensor:
    """(M, n) advantages of M = G * groups branches laid out group-major (branch m belongs to group
    m // G): each branch's discounted return minus the mean return of the other G - 1 branches of its
    group (leave-one-out baseline), on every valid chunk of the branch; 0 on invalid chunks."""
    branches, chunks = rewards.shape
    if branches % group_size:
        raise ValueError(f"{branches} branches do not form groups of {group_size}")
    returns = (rewards.float() * discount ** torch.arange(chunks, dtype=torch.float32)).sum(dim=1)
    grouped = returns.view(-1, group_size)
    others = (grouped.sum(dim=1, keepdim=True) - grouped) / (group_size - 1)
    return (grouped - others).reshape(branches, 1) * valid.float()


class MBPOTrainer:
    def __init__(self, policy: Any, world_model: Any, start_states: StartStateSampler, config: MBPOConfig,
                 anchor: Any = None) -> None:
        """``anchor``: demonstrations as ``policy.bc.BCArrays`` for the flow-matching anchor."""
        if config.bc_anchor_coef > 0 and anchor is None:
            raise ValueError("bc_anchor_coef > 0 needs the demonstrations (anchor) to compute the BC loss on")
        self.anchor = anchor
        self.policy = policy
        self.world_model = world_model
        self.start_states = start_states
        self.config = config
        self.updater = PPOUpdater(policy, config.ppo)
        # Each process its own rollouts (rank 0 draws what a single process would).
        seed = config.seed + 100_003 * distributed.rank()
        self.rng = np.random.default_rng(seed)
        self.generator = torch.Generator().manual_seed(seed)
        self.processes = distributed.world_size()
        self.discount = chunk_discount(config.gamma, policy.chunk_size, config.discount_per_step)
        self.episodes_used = 0

    # ----------------------------------------------------------------- data
    def _draw_start_states(self, count: int) -> list:
        if self.config.rollout_mode == "branched":
            return self.start_states.sample(count, self.rng)
        initial = self.start_states.initial_states()
        if not initial:
            raise ValueError("full_horizon mode needs episodes with frame 0 in the start-state sampler")
        return [initial[i] for i in self.rng.integers(0, len(initial), size=count)]

    def collect(self) -> RolloutBuffer:
        cfg = self.config
        branches = max(1, cfg.samples_per_refill // cfg.chunks_per_branch // self.processes)
        if cfg.episode_budget:
            branches = min(branches, cfg.episode_budget - self.episodes_used)
            if branches <= 0:
                raise RuntimeError("episode budget exhausted")
        group = cfg.group_size
        distinct = max(1, branches // group)
        # Group-major layout: the G branches of one start state are consecutive.
        starts = [state for state in self._draw_start_states(distinct) for _ in range(group)]
        branches = len(starts)
        parts = [branched_rollout(self.policy, self.world_model, starts[i: i + cfg.rollout_batch_size],
                                  cfg.chunks_per_branch, self.generator)
                 for i in range(0, branches, cfg.rollout_batch_size)]
        self.episodes_used += branches
        return RolloutBuffer.concatenate(parts) if len(parts) > 1 else parts[0]

    @torch.no_grad()
    def recompute_values(self, buffer: RolloutBuffer) -> tuple[torch.Tensor, torch.Tensor]:
        """V at every stored step and at the bootstrap states, with the current critic."""
        self.policy.eval()
        size = self.config.rollout_batch_size
        obs, final = buffer.observations, buffer.final_observations

        def batched(batch) -> torch.Tensor:
            return torch.cat([self.policy.value(batch.select(np.arange(i, min(i + size, len(batch)))))
                              for i in range(0, len(batch), size)])

        values = batched(obs).view(buffer.num_chunks, buffer.num_branches).T.contiguous()
        return values, batched(final)

    def advantages(self, buffer: RolloutBuffer, values: torch.Tensor, bootstrap: torch.Tensor) -> Advantages:
        adv, returns, valid = chunk_gae(buffer.rewards, values, bootstrap, buffer.dones, self.discount,
                                        self.config.gae_lambda)
        if self.config.advantage_estimator == "group":
            adv = group_advantages(buffer.rewards, valid, self.config.group_size, self.discount)
        elif self.config.normalize_advantages:
            adv = normalize_advantages(adv, valid)
        return Advantages(adv, returns, values, valid)

    def _anchor_loss(self) -> torch.Tensor:
        """Flow-matching loss of the policy on a random minibatch of the demonstrations."""
        from vla_mbpo_ros.core.policy.base import ObsBatch

        data = self.anchor
        index = self.rng.integers(0, len(data), size=min(self.config.bc_anchor_batch, len(data)))
        batch = ObsBatch(views={n: v[index] for n, v in data.views.items()}, states=data.states[index],
                         instructions=[data.instructions[i] for i in index])
        return self.policy.flow_matching_loss(batch, torch.from_numpy(data.action_chunks[index]),
                                              torch.from_numpy(data.action_valid[index]), self.generator)

    # ----------------------------------------------------------------- optimisation
    def iteration(self) -> dict[str, float]:
        """One refill + ``update_to_data`` PPO steps. Returns averaged statistics."""
        cfg = self.config
        buffer = self.collect()
        targets = self.advantages(buffer, buffer.values, buffer.bootstrap_values)
        branch_idx, chunk_idx = torch.nonzero(targets.valid, as_tuple=True)
        critic_only = cfg.actor_needs_reward and not distributed.any_across(bool((buffer.rewards > 0).any()))
        minibatch = max(1, cfg.minibatch_size // self.processes)
        history: list[dict[str, float]] = []
        kl_stopped_at = -1
        anchor = self._anchor_loss if cfg.bc_anchor_coef > 0 else None
        for update in range(cfg.update_to_data):
            if update > 0 and update % cfg.recompute_every == 0:
                targets = self.advantages(buffer, *self.recompute_values(buffer))
            pick = torch.from_numpy(self.rng.permutation(len(branch_idx))[:minibatch])
            b, c = branch_idx[pick], chunk_idx[pick]
            actor_step = not (critic_only or update < cfg.critic_warmup_updates or kl_stopped_at >= 0)
            history.append(self.updater.update(
                observations=buffer.observations.select(buffer.observation_rows(b, c)),
                chains=buffer.chains[b, c], denoise_index=buffer.denoise_index[b, c],
                old_log_probs=buffer.log_probs[b, c], old_values=targets.values[b, c],
                advantages=targets.advantages[b, c], returns=targets.returns[b, c],
                mask=torch.ones(len(b), dtype=torch.bool), critic_only=not actor_step,
                anchor_loss=anchor, anchor_coef=cfg.bc_anchor_coef))
            # KL early stop (per refill): the decision is reduced so every process stops together.
            target_kl = cfg.ppo.target_kl
            if actor_step and target_kl and distributed.any_across(history[-1]["approx_kl"] > target_kl):
                kl_stopped_at = update
        stats = {key: float(np.mean([h[key] for h in history if key in h]))
                 for key in sorted({k for h in history for k in h})}
        for key, reduce in (("ratio_min", min), ("ratio_max", max), ("approx_kl", max)):
            seen = [h[key] for h in history if key in h]
            if seen:
                stats[f"{key}_extreme" if key == "approx_kl" else key] = float(reduce(seen))
        stats["actor_steps"] = float(sum("approx_kl" in h for h in history))
        stats["kl_stopped_at"] = float(kl_stopped_at)  # -1: not stopped
        stats["sde_sigma_max"] = _sde_sigma_max(self.policy)
        stats.update(imagined_success=buffer.success_rate(), valid_transitions=float(len(branch_idx)),
                     explained_variance=explained_variance(targets.values, targets.returns, targets.valid),
                     actor_updated=float(not critic_only),
                     episodes_used=float(self.episodes_used))
        return stats

    def validation_success(self) -> float:
        """Deterministic success over a fixed (seeded) set of start states, shared out among the processes."""
        if not self.config.validation_starts:
            return float("nan")
        rng = np.random.default_rng(self.config.seed + 1)
        initial = self.config.rollout_mode == "full_horizon" or self.config.validation_from == "initial"
        pool = self.start_states.initial_states() if initial else self.start_states.states
        starts = [pool[i] for i in rng.integers(0, len(pool), size=self.config.validation_starts)]
        mine = starts[distributed.rank()::self.processes]
        successes = deterministic_success_rate(self.policy, self.world_model, mine, self.config.validation_chunks) * len(mine) \
            if mine else 0.0
        return distributed.sum_across(successes) / len(starts)

    def _trainable_snapshot(self) -> list[torch.Tensor]:
        """CPU copies of what PPO can change (actor, critic), for a rollback: not a device copy of the whole
        policy (a frozen VLM cannot change, and copying pi0.5 on the GPU would cost 8-16 GB)."""
        return [p.detach().to("cpu", copy=True) for p in self.updater.actor_params + self.updater.critic_params]

    def _restore(self, snapshot: list[torch.Tensor]) -> None:
        with torch.no_grad():
            for param, saved in zip(self.updater.actor_params + self.updater.critic_params, snapshot):
                param.copy_(saved)

    def train(self, on_iteration: Callable[[int, dict[str, float]], None] | None = None,
              real_success: tuple[int, int] | None = None) -> dict[str, Any]:
        """Run all iterations; validate before and after, rolling back on a drop when configured.
        ``real_success``: (successes, episodes) of the running policy in its latest real episodes, which
        ``calibrated_validation`` compares its imagined validation success with before any training."""
        snapshot = self._trainable_snapshot()
        before = self.validation_success()
        if self.config.calibrated_validation:
            calibrated, why = imagination_calibrated(before, *(real_success or (0, 0)))
            if not calibrated:
                return {"success_before": before, "success_after": float("nan"), "accepted": False, "reason": why,
                        "calibrated": False, "history": []}
        history = []
        for index in range(self.config.num_iterations):
            if self.config.episode_budget and self.episodes_used >= self.config.episode_budget:
                break
            stats = self.iteration()
            history.append(stats)
            if on_iteration is not None:
                on_iteration(index, stats)
        after = self.validation_success()
        if self.config.validation_starts:
            accepted, reason = accept_update(before, after, self.config.require_validation_success)
        else:
            accepted, reason = True, "no validation (validation_starts 0)"
        if not accepted and self.config.rollback_on_drop:
            self._restore(snapshot)
        return {"success_before": before, "success_after": after, "accepted": accepted, "reason": reason,
                "history": history}


def _sde_sigma_max(policy: Any) -> float:
    """The largest sigma_i of the policy's Flow-SDE (fixed by its config: the exploration noise scale)."""
    from vla_mbpo_ros.core.policy.flow_sde import sde_sigmas

    sde = getattr(getattr(policy, "config", None), "sde", None)
    return float(sde_sigmas(sde.num_steps, sde.noise_level).max()) if sde is not None else float("nan")
