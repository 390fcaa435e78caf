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
