"""One process of the multi-process training check: started twice by test/core/test_distributed.py as

    python -m torch.distributed.run --standalone --nproc_per_node 2 test/distributed_worker.py --out DIR

(gloo on the CPU; the same code runs one process per GPU under torchrun with nccl). Each process
writes DIR/rank<r>.json with what the test compares:

1. PPO: DDP steps where each process has half of a fixed minibatch, against a plain single-process
   PPOUpdater on the whole minibatch (largest parameter difference; a critic-only step first, which
   must leave the actor untouched);
2. the MBPO trainer (rollouts in the toy point world, PPO through DDP): fingerprint of the weights;
3. world-model training through accelerate on a tiny UMM: image loss at the start and the end, and
   the fingerprint of its weights.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE / "core")]

import numpy as np  # noqa: E402
import torch  # noqa: E402

from vla_mbpo_ros.core.util import distributed  # noqa: E402

torch.set_num_threads(1)


def fingerprint(module: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode() + tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def ppo_against_single_process() -> dict:
    from test_mbpo import tiny_policy, toy_sampler
    from toy_world import PointReachWorld

    from vla_mbpo_ros.core.rl.ppo import PPOConfig, PPOUpdater
    from vla_mbpo_ros.core.rl.rollout import branched_rollout

    world = PointReachWorld()
    # The same 16 transitions on every process: same weights, same seeded rollout.
    starts = toy_sampler(world).sample(8, np.random.default_rng(1))
    buffer = branched_rollout(tiny_policy(0), world, starts, 2, torch.Generator().manual_seed(3))
    b, c = torch.nonzero(torch.ones(8, 2, dtype=torch.bool), as_tuple=True)
    advantages = torch.linspace(-1.0, 1.0, len(b))

    def minibatch(rows: np.ndarray) -> dict:
        rb, rc = b[rows], c[rows]
        return dict(observations=buffer.observations.select(buffer.observation_rows(rb, rc)), chains=buffer.chains[rb, rc],
                    denoise_index=buffer.denoise_index[rb, rc], old_log_probs=buffer.log_probs[rb, rc],
                    old_values=buffer.values[rb, rc], advantages=advantages[rows],
                    returns=buffer.values[rb, rc] + 0.5, mask=torch.ones(len(rows), dtype=torch.bool))

    config = PPOConfig(actor_lr=1e-3, critic_lr=1e-3)
    parallel, single = tiny_policy(0), tiny_policy(0)
    parallel_updater = PPOUpdater(parallel, config)  # DDP: this process's half, gradients averaged
    single_updater = PPOUpdater(single, config, data_parallel=False)  # one process, the whole minibatch
    half = np.arange(distributed.rank(), len(b), distributed.world_size())
    actor_before = [p.detach().clone() for p in parallel.actor_parameters()]
    actor_untouched, gradient_error = None, 0.0
    for step, critic_only in enumerate((True, False, False)):
        parallel_updater.update(**minibatch(half), critic_only=critic_only)
        single_updater.update(**minibatch(np.arange(len(b))), critic_only=critic_only)
        if step == 0:
            actor_untouched = all(torch.equal(a, p) for a, p in zip(actor_before, parallel.actor_parameters()))
            actor_untouched &= all(p.grad is None for p in parallel.actor_parameters())
        # The averaged gradient of the halves is the whole minibatch's (the step's inputs were equal).
        pairs = [(p.grad, q.grad) for p, q in zip(parallel.parameters(), single.parameters()) if q.grad is not None]
        scale = max(float(g.abs().max()) for _, g in pairs)
        gradient_error = max(gradient_error, max(float((g - h).abs().max()) for g, h in pairs) / scale)
        single.load_state_dict(parallel.state_dict())  # next step from the same weights: no drift from Adam's sign-like steps
    moved = max(float((p - a).abs().max()) for p, a in zip(parallel.actor_parameters(), actor_before))
    return {"relative_gradient_error": gradient_error, "actor_moved": moved,
            "actor_untouched_by_critic_step": actor_untouched, "half_size": len(half)}


def mbpo_trainer() -> dict:
    from test_mbpo import tiny_policy, toy_sampler
    from toy_world import PointReachWorld

    from vla_mbpo_ros.core.rl.ppo import PPOConfig
    from vla_mbpo_ros.core.rl.trainer import MBPOConfig, MBPOTrainer

    world = PointReachWorld()
    policy = tiny_policy(distributed.rank())  # different starts: DDP must broadcast rank 0's weights
    config = MBPOConfig(num_iterations=2, samples_per_refill=32, update_to_data=4, minibatch_size=16,
                        critic_warmup_updates=1, validation_starts=8, ppo=PPOConfig(actor_lr=1e-3))
    result = MBPOTrainer(policy, world, toy_sampler(world), config).train()
    return {"fingerprint": fingerprint(policy), "success_before": result["success_before"],
            "success_after": result["success_after"], "accepted": result["accepted"]}


def world_model_training() -> dict:
    from test_world_model import DATA, INSTRUCTION, SIZE, VIEWS, ARCH, make_episodes

    from vla_mbpo_ros.core.world_model.data import action_stats, build_samples
    from vla_mbpo_ros.core.world_model.train import TrainConfig, train_world_model
    from vla_mbpo_ros.core.world_model.umm import UMMWorldModel

    episodes = make_episodes(8, seed=10)
    dynamics, reward = build_samples(episodes, VIEWS, DATA)
    model = UMMWorldModel.tiny(VIEWS, action_stats(episodes), SIZE, distributed.rank(), arch=ARCH, instructions=[INSTRUCTION])
    config = TrainConfig(steps=60, batch_size=4, reward_batch_size=4, lr=2e-3, warmup_steps=5)  # per process: 8 in all
    history = train_world_model(model, dynamics, reward, config, progress=False)
    return {"image_loss_first": float(np.mean(history.image_loss[:10])), "image_loss_last": float(np.mean(history.image_loss[-10:])),
            "fingerprint": fingerprint(model.core)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    assert distributed.init_from_environment("cpu"), "start this under torchrun with more than one process"
    report = {"rank": distributed.rank(), "world_size": distributed.world_size(), "ppo": ppo_against_single_process(),
              "mbpo": mbpo_trainer(), "world_model": world_model_training()}
    (args.out / f"rank{distributed.rank()}.json").write_text(json.dumps(report, indent=2))
    distributed.barrier()


if __name__ == "__main__":
    main()
