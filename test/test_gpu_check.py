"""bench/gpu_check.py: the --tiny run goes through the code path the GPU run measures (toy sizes, CPU)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"


def test_tiny_run_writes_every_figure_and_states_them_last(tmp_path: Path):
    out = tmp_path / "figures.json"
    run = subprocess.run([sys.executable, str(BENCH), "--tiny", "--threads", "1", "--out", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["status"] == "measured" and figures["device"] == "cpu"
    imagination = figures["imagination"]
    assert imagination["batch"] == 16 and imagination["branches_per_s"] > 0 and imagination["image_tokens_per_view"] == 16
    assert figures["world_model_training"]["batch"] == 8 and figures["world_model_training"]["seconds_per_step"] > 0
    ppo = figures["ppo_update"]
    assert ppo["seconds"] > 0 and 0 < ppo["trainable_parameters"] < ppo["parameters"]
    last = run.stdout.strip().splitlines()[-1]
    assert last.startswith("gpu_check (tiny, cpu): imagination") and "PPO update" in last and "world-model step" in last


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU this would run the full-size check")
def test_without_a_gpu_the_full_run_says_not_measured(tmp_path: Path):
    out = tmp_path / "figures.json"
    run = subprocess.run([sys.executable, str(BENCH), "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert json.loads(out.read_text())["status"] == "not measured"
    assert run.stdout.strip().splitlines()[-1] == "gpu_check: not measured (no CUDA device on this machine)"
