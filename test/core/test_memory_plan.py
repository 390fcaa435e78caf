"""The memory plan (core/util/memory_plan.py): parameter counts against models built on the meta device,
activation estimates against peaks measured on the CPU at toy size, the fit check and its one-line refusal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vla_mbpo_ros.core.loop.pipeline import PipelineConfig
from vla_mbpo_ros.core.util.memory_plan import (
    JANUS_PRO_1B,
    POLICY_SHAPES,
    Decoder,
    PlanDoesNotFit,
    _decoder_training,
    check_fits,
    janus_shape_from_config,
    plan_for_pipeline,
)

REPO = Path(__file__).resolve().parents[2]
GPU_CONFIGS = [REPO / "config" / "finetune_gpu.yaml", REPO / "config" / "finetune_gpu_24gb.yaml"]


def test_pi05_parameter_count_matches_lerobots_model_on_the_meta_device():
    from lerobot.policies.pi05 import modeling_pi05
    from lerobot.policies.pi05.configuration_pi05 import PI05Config

    with torch.device("meta"):
        model = modeling_pi05.PI05Pytorch(PI05Config(device="cpu"))
    built = sum(p.numel() for p in model.parameters())
    expert = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("paligemma_with_expert.paligemma.")
                 and ".lm_head." not in n)
    shape = POLICY_SHAPES["pi05"].parameters()
    assert sum(shape.values()) == pytest.approx(built, rel=1e-3)
    assert shape["expert"] == pytest.approx(expert, rel=0.01)


def test_janus_pro_1b_parameter_count_matches_transformers_on_the_meta_device():
    sys.path.insert(0, str(REPO / "bench"))
    from gpu_smoke import JANUS_PRO_1B as DIMS
    from transformers import JanusConfig, JanusForConditionalGeneration

    config = JanusConfig(**DIMS, tie_word_embeddings=False)
    with torch.device("meta"):
        model = JanusForConditionalGeneration(config)
    built = {"vision": model.model.vision_model, "llm": model.model.language_model, "vq": model.model.vqmodel}
    counts = {k: sum(p.numel() for p in m.parameters()) for k, m in built.items()}
    counts["llm"] += model.lm_head.weight.numel()
    total = sum(p.numel() for p in model.parameters())
    for shape in (JANUS_PRO_1B, janus_shape_from_config(config.to_dict())):
        estimate = shape.parameters()
        assert sum(estimate.values()) == pytest.approx(total, rel=0.03)
        assert estimate["llm"] == pytest.approx(counts["llm"], rel=0.01)
        assert estimate["vision"] == pytest.approx(counts["vision"], rel=0.03)


def _measure(checkpointing: bool, rows: int, tokens: int) -> dict[str, int]:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0", "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, str(REPO / "test" / "measure_activation_peak.py"), str(int(checkpointing)),
                          str(rows), str(tokens)], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("checkpointing", [False, True])
def test_activation_estimate_is_within_a_quarter_of_the_peak_measured_on_the_cpu(checkpointing: bool):
    """A toy Llama (4 layers, 256 wide) under bf16 autocast: the step's measured RSS peak over weights and
    gradients against the plan's kept activations + recomputation peak."""
    rows, tokens = 8, 256
    decoder = Decoder(layers=4, hidden=256, intermediate=1024, heads=4, kv_heads=2, head_dim=64)
    kept, recompute = _decoder_training(decoder, rows, tokens, tokens, tokens, False, checkpointing)
    measured = _measure(checkpointing, rows, tokens)["backward_peak"]
    assert 0.75 < (kept + recompute) / measured < 1.25, (kept + recompute, measured)


def _config(path: Path, **memory) -> PipelineConfig:
    config = PipelineConfig.from_yaml(path)
    for key, value in memory.items():
        setattr(config.memory, key, value)
    return config


@pytest.mark.parametrize("path", GPU_CONFIGS, ids=lambda p: p.name)
def test_shipped_gpu_configs_fit_their_gpu_by_the_plan(path: Path):
    config = PipelineConfig.from_yaml(path)
    assert config.memory.gpu_gb > 0
    plan = plan_for_pipeline(config)
    assert plan.refusal() is None, plan.table()
    check_fits(config)


def test_a_config_that_cannot_fit_is_refused_with_one_line_naming_phase_and_excess():
    config = _config(GPU_CONFIGS[0], gpu_gb=24.0)
    plan = plan_for_pipeline(config)
    phase, over = plan.overflow()
    with pytest.raises(PlanDoesNotFit) as err:
        check_fits(config)
    message = str(err.value)
    assert "\n" not in message and f"phase {phase}" in message and f"{over:.1f} GiB more" in message


def test_checkpointing_and_a_frozen_vlm_shrink_the_bc_phase():
    base = PipelineConfig.from_yaml(GPU_CONFIGS[0])
    base.policy.lerobot.gradient_checkpointing, base.policy.lerobot.bc_trainable = False, "all"
    lean = PipelineConfig.from_yaml(GPU_CONFIGS[0])
    assert plan_for_pipeline(lean).phase("bc").gib < plan_for_pipeline(base).phase("bc").gib / 2


def test_plan_cli_prints_every_phase_and_fits(capsys):
    from vla_mbpo_ros.plan import main

    assert main(["--config", str(GPU_CONFIGS[0]), "--gpu-gb", "80"]) == 0
    out = capsys.readouterr().out
    for phase in ("bc", "world_model", "imagination", "ppo"):
        assert f"\n{phase}" in out
    assert out.strip().splitlines()[-1] == "memory plan: every phase fits"
    assert main(["--config", str(GPU_CONFIGS[0]), "--gpu-gb", "10"]) == 1
    assert "more than the 10 GiB GPU" in capsys.readouterr().out.strip().splitlines()[-1]
