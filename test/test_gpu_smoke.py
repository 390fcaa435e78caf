"""bench/gpu_smoke.py --tiny: the GPU setups' real loop (run_iteration x 2: BC, world-model finetune, imagination,
reward, PPO, publish, the executor's load-and-validate) at toy widths on the CPU under bf16 autocast. It checks
shapes, dtypes, the adaptation of a "pretrained" checkpoint (3 cameras, 8-d, chunk 12) to the robot (2 views, 6-d,
executed chunk = the world model's frame skip) and the trainable selection; its figures mean nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench" / "gpu_smoke.py"


@pytest.mark.parametrize("config", ["finetune_gpu.yaml", "finetune_gpu_24gb.yaml"])
def test_tiny_smoke_runs_the_loop_and_states_its_figures_last(tmp_path: Path, config: str):
    out = tmp_path / "smoke.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, str(BENCH), "--config", str(REPO / "config" / config), "--tiny", "--out", str(out),
                          "--workdir", str(tmp_path / "work")], capture_output=True, text=True, timeout=240, env=env)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    figures = json.loads(out.read_text())
    assert figures["ok"] and figures["status"] == "measured" and figures["problems"] == []
    assert abs(figures["first_ppo_ratio_mean"] - 1.0) < 1e-3
    assert figures["weights_changed"]["policy_expert_tensors"] > 0 and figures["weights_changed"]["world_model_llm_tensors"] > 0
    assert figures["weights_changed"]["policy_vlm_tensors"] == 0  # RL leaves the frozen VLM alone
    assert figures["reload_max_abs_error"] == 0.0
    for phase in ("bc", "wm", "imagine", "ppo"):
        assert figures["phases"][phase]["peak_gib"] > 0 and figures["phases"][phase]["items_per_s"] > 0
    assert "adapted policy to the robot" in run.stdout and "n_action_steps 12 -> 10" in run.stdout
    last = run.stdout.strip().splitlines()[-1]
    assert last.startswith(f"gpu_smoke: ok=true config={REPO / 'config' / config} peak_gb=bc:") and "branches_per_s=" in last


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU this would run the full-size smoke")
def test_without_a_gpu_the_full_run_says_not_measured(tmp_path: Path):
    out = tmp_path / "smoke.json"
    run = subprocess.run([sys.executable, str(BENCH), "--config", str(REPO / "config" / "finetune_gpu.yaml"), "--out", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert json.loads(out.read_text())["status"] == "not measured"
    assert run.stdout.strip().splitlines()[-1] == "gpu_smoke: not measured (no CUDA device on this machine)"
