"""Training with two processes under torchrun (gloo on the CPU): DDP for PPO, accelerate for the world model.

test/distributed_worker.py does the work in each process; here the two processes' reports are compared.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

WORKER = Path(__file__).resolve().parents[1] / "distributed_worker.py"


def test_two_processes_keep_identical_weights_and_match_one_process(tmp_path: Path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(WORKER), "--out", str(tmp_path)]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world_size"] for r in ranks] == [2, 2]

    for report in ranks:
        ppo = report["ppo"]
        # Half the minibatch per process with averaged gradients == the whole minibatch in one process.
        assert ppo["half_size"] == 8 and ppo["relative_gradient_error"] < 1e-5, ppo
        assert ppo["actor_untouched_by_critic_step"] and ppo["actor_moved"] > 1e-5, ppo
    # The processes started from different random weights; DDP / the broadcast made them one model.
    assert ranks[0]["mbpo"] == ranks[1]["mbpo"]
    assert ranks[0]["world_model"]["fingerprint"] == ranks[1]["world_model"]["fingerprint"]
    world_model = ranks[0]["world_model"]
    assert world_model["image_loss_last"] < 0.8 * world_model["image_loss_first"], world_model
