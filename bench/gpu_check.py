"""The real-scale figures of the loop on one GPU, with random weights (nothing is downloaded):

    . scripts/env.sh && python bench/gpu_check.py --out gpu_figures.json      # a CUDA machine (< 8 min, one H200)
    . scripts/env.sh && python bench/gpu_check.py --tiny --out /tmp/fig.json   # the same code path at toy sizes, CPU

1. World model: a Janus-Pro-1B-sized ``JanusForConditionalGeneration`` (text: Llama 2048 wide, 24 layers,
   16 heads, MLP 5632, vocabulary 102400; understanding: SigLIP-L 1024 wide, 24 layers, 384 px, patch 16;
   generation: VQ-16 with 16384 codes, 384 px -> 24 x 24 = 576 image tokens per view; aligners 2048 wide,
   depth 2 - the dimensions of deepseek-community/Janus-Pro-1B's config) wrapped in ``UMMWorldModel``
   with this package's tokenizer. Figures: branches/s of batched imagination at B = 16 (two views, IVD:
   head then wrist, each 576 tokens generated with the KV cache, then the reward answer), i.e. imagined
   chunk transitions per second; seconds of one world-model training step at batch 8 (accelerate,
   bf16 mixed precision, vision encoder frozen as in the loop), from the difference of two short runs.
2. Policy: a full-size LeRobot pi0.5 (PaliGemma 2B + Gemma 300M action expert, bf16, 224 px, chunk 50 of
   which k = 10 are executed) in ``LeRobotFlowPolicy``; one PPO update (``PPOUpdater``, Flow-SDE K = 3)
   on a minibatch of config/finetune_gpu.yaml's size with only the action expert (and value head)
   trainable. Figures: seconds of the update (the second one; the first allocates the optimizer state)
   and peak GPU memory from before the first update.

``--tiny``: a toy Janus (16 tokens per view) and, because LeRobot's PI05Config only allows Gemma 2B / 300M,
a tiny SmolVLA through the same adapter and PPO code (test/tiny_models.py), on the CPU; it checks the
code path, its figures mean nothing. Without a CUDA device and without ``--tiny`` nothing is measured:
the file says "not measured". The last printed line states the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "bench"), str(REPO / "test")]  # pi0_adapter_check (pi0.5 builder), tiny_models (--tiny)

VIEWS = ("head", "wrist")
ACTION_DIM = 6
INSTRUCTION = "pick up the red cube"
GIB = 2**30


@dataclass
class Scale:
    """Sizes of one run: the real ones, or toy ones for --tiny."""

    janus_text: dict[str, Any]
    janus_vision: dict[str, Any]
    janus_vq: dict[str, Any]
    branches: int = 16  # imagination batch B
    imagination_repeats: int = 2  # timed steps after one warm-up
    chunk: int = 10  # k: actions per imagined chunk
    wm_batch: int = 8
    wm_extra_steps: int = 5  # the second training run is this many steps longer than the first
    ppo_batch: int = 0  # 0: config/finetune_gpu.yaml's mbpo.minibatch_size (512)
    policy_image: int = 224
    episodes_frames: int = 24
    lerobot: dict[str, Any] = field(default_factory=dict)


JANUS_PRO_1B = Scale(
    janus_text=dict(model_type="llama", vocab_size=102400, hidden_size=2048, intermediate_size=5632, num_hidden_layers=24,
                    num_attention_heads=16, num_key_value_heads=16, max_position_embeddings=16384, rms_norm_eps=1e-6,
                    tie_word_embeddings=False),
    janus_vision=dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, image_size=384, patch_size=16,
                      mlp_ratio=4.0, projection_dim=2048, depth=2, num_image_tokens=576),
    janus_vq=dict(embed_dim=8, num_embeddings=16384, latent_channels=256, base_channels=128, channel_multiplier=[1, 1, 2, 2, 4],
                  num_res_blocks=2, projection_dim=2048, image_token_embed_dim=2048, num_hidden_layers=2),
)
TOY = Scale(
    janus_text=dict(model_type="llama", vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=4096, tie_word_embeddings=False),
    janus_vision=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8, mlp_ratio=2.0,
                      projection_dim=64, depth=1, num_image_tokens=16),
    janus_vq=dict(embed_dim=8, num_embeddings=64, latent_channels=32, base_channels=32, channel_multiplier=[1, 1, 2, 2],
                  num_res_blocks=1, projection_dim=64, image_token_embed_dim=64, num_hidden_layers=1),
    branches=16, imagination_repeats=1, wm_batch=8, wm_extra_steps=2, ppo_batch=8, policy_image=32, episodes_frames=16,
)


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def autocast(device: str):
    """bf16 autocast on a GPU, as the loop runs imagination and PPO with ``devices.dtype: bfloat16``."""
    if device.startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def log(message: str) -> None:
    print(f"[gpu_check] {message}", flush=True)


# ----------------------------------------------------------------------------- world model
def build_world_model(scale: Scale, device: str) -> Any:
    """Random-weight Janus of the scale's dimensions inside the package's UMMWorldModel."""
    from transformers import JanusConfig, JanusForConditionalGeneration, JanusImageProcessor

    from vla_mbpo_ros.core.world_model.codec import ActionCodec, ActionStats
    from vla_mbpo_ros.core.world_model.configuration import IMAGE_TOKENS, WorldModelConfig, build_tiny_tokenizer
    from vla_mbpo_ros.core.world_model.modeling import UMMCore
    from vla_mbpo_ros.core.world_model.umm import UMMWorldModel

    config = WorldModelConfig(view_names=VIEWS)
    # Prompts and action integers tokenize to a few hundred ids, far inside the 102400-row embedding.
    tokenizer = build_tiny_tokenizer(VIEWS, config.prompts, config.n_bins, [INSTRUCTION], 700)
    janus_config = JanusConfig(
        text_config={**scale.janus_text, "pad_token_id": tokenizer.pad_token_id},
        vision_config=scale.janus_vision, vq_config=scale.janus_vq,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKENS["image_token"]), tie_word_embeddings=False)
    torch.manual_seed(0)
    with torch.device(device):  # random init directly on the GPU
        janus = JanusForConditionalGeneration(janus_config).eval()
    size = scale.janus_vision["image_size"]
    processor = JanusImageProcessor(size={"height": size, "width": size}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    stats = ActionStats(low=-np.ones(ACTION_DIM), high=np.ones(ACTION_DIM))
    return UMMWorldModel(UMMCore(janus, tokenizer, processor, config), ActionCodec(stats, config.n_bins))


def measure_imagination(model: Any, scale: Scale, device: str) -> dict[str, float]:
    rng = np.random.default_rng(0)
    size, batch = scale.janus_vision["image_size"], scale.branches
    views = {v: rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8) for v in VIEWS}
    chunks = rng.uniform(-1, 1, (batch, scale.chunk, ACTION_DIM)).astype(np.float32)
    instructions = [INSTRUCTION] * batch
    with autocast(device):
        model.step(views, chunks, instructions)  # warm-up: kernels, allocator
        synchronize(device)
        started = time.perf_counter()
        for _ in range(scale.imagination_repeats):
            next_views, reward = model.step(views, chunks, instructions)[:2]
        synchronize(device)
    seconds = (time.perf_counter() - started) / scale.imagination_repeats
    assert next_views["wrist"].shape == views["wrist"].shape and reward.shape == (batch,)
    return {"branches_per_s": batch / seconds, "seconds_per_imagined_chunk": seconds, "batch": batch,
            "image_tokens_per_view": int(model.core.janus.config.vq_config.num_patches) ** 2}


def synthetic_episodes(scale: Scale) -> list:
    from vla_mbpo_ros.core.data.episode import Episode

    rng = np.random.default_rng(1)
    size, frames = scale.janus_vision["image_size"], scale.episodes_frames
    return [Episode(views={v: rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8) for v in VIEWS},
                    states=np.zeros((frames, ACTION_DIM), np.float32),
                    actions=rng.uniform(-1, 1, (frames, ACTION_DIM)).astype(np.float32),
                    instruction=INSTRUCTION, success=success) for success in (True, False)]


def measure_world_model_step(model: Any, scale: Scale, device: str) -> dict[str, float]:
    """Seconds per training step: two runs of train_world_model, steps n and n + extra, differenced
    (tokenizing the frames and building the optimizer are outside the step)."""
    from vla_mbpo_ros.core.world_model.data import DataConfig, build_samples
    from vla_mbpo_ros.core.world_model.train import TrainConfig, train_world_model

    dynamics, reward = build_samples(synthetic_episodes(scale), VIEWS, DataConfig(chunk_size=scale.chunk, reward_no_margin=2))
    seconds = []
    for steps in (1, 1 + scale.wm_extra_steps):
        config = TrainConfig(steps=steps, batch_size=scale.wm_batch, reward_batch_size=scale.wm_batch, warmup_steps=1,
                             mixed_precision="bf16" if device.startswith("cuda") else "no")
        synchronize(device)
        started = time.perf_counter()
        history = train_world_model(model, dynamics, reward, config, progress=False)
        synchronize(device)
        seconds.append(time.perf_counter() - started)
        assert np.isfinite(history.image_loss).all()
    return {"seconds_per_step": (seconds[1] - seconds[0]) / scale.wm_extra_steps, "batch": scale.wm_batch,
            "trainable_parameters": sum(p.numel() for p in model.core.parameters() if p.requires_grad)}


# ----------------------------------------------------------------------------- policy + PPO
def build_pi05(scale: Scale, device: str, workdir: Path) -> Any:
    """Full-size pi0.5 (random weights, bf16 backbone as LeRobot builds it) behind LeRobotFlowPolicy."""
    import pi0_adapter_check as pi0  # the builder the CPU adapter check uses (bf16 construction, local tokenizer)
    from lerobot.policies.factory import make_pre_post_processors

    from vla_mbpo_ros.core.policy.flow_sde import FlowSDEConfig
    from vla_mbpo_ros.core.policy.lerobot_adapter import LeRobotFlowConfig, LeRobotFlowPolicy

    settings = argparse.Namespace(backend="pi05", image_size=scale.policy_image, chunk=50, executed=scale.chunk, steps=3,
                                  max_tokens=48)
    _, policy_cls, processor_module, modeling = pi0.lerobot_modules("pi05")
    config = pi0.make_config(settings)
    config.device = device
    torch.manual_seed(0)
    with pi0.bf16_backbone(modeling):
        lerobot_policy = policy_cls(config).to(device).eval()
    with pi0.local_tokenizer(processor_module, pi0.save_word_tokenizer(workdir / "tokenizer")):
        preprocessor, postprocessor = make_pre_post_processors(config, dataset_stats=pi0.dataset_stats())
    adapter = LeRobotFlowConfig(device=device, sde=FlowSDEConfig(num_steps=3, noise_level=0.5))
    return LeRobotFlowPolicy(lerobot_policy, preprocessor, postprocessor, adapter, version="gpu_check").eval()


def build_tiny_smolvla(workdir: Path) -> Any:
    """--tiny: pi0.5 cannot be shrunk (Gemma 2B / 300M only), so a tiny SmolVLA through the same adapter."""
    import tiny_models

    from vla_mbpo_ros.core.policy.lerobot_adapter import LeRobotFlowConfig, LeRobotFlowPolicy

    vlm = tiny_models.save_tiny_smolvlm(workdir / "vlm")
    lerobot_dir = tiny_models.save_tiny_smolvla(workdir / "smolvla", vlm)
    return LeRobotFlowPolicy.from_lerobot(lerobot_dir, LeRobotFlowConfig(), vlm_dir=vlm)


def measure_ppo(policy: Any, scale: Scale, device: str, batch_size: int) -> dict[str, Any]:
    from vla_mbpo_ros.core.policy.base import ObsBatch
    from vla_mbpo_ros.core.rl.ppo import PPOConfig, PPOUpdater

    rng = np.random.default_rng(2)
    size = scale.policy_image
    batch = ObsBatch(views={v: rng.integers(0, 256, (batch_size, size, size, 3), dtype=np.uint8) for v in policy.view_names},
                     states=rng.normal(size=(batch_size, ACTION_DIM)).astype(np.float32),
                     instructions=[INSTRUCTION] * batch_size)
    with torch.no_grad(), autocast(device):
        sample = policy.sample_chunks(batch, torch.Generator().manual_seed(3))
    updater = PPOUpdater(policy, PPOConfig())  # paper settings: actor lr 5e-6, critic lr 1e-4, clip 0.1
    inputs = dict(observations=batch, chains=sample.chain, denoise_index=sample.denoise_index,
                  old_log_probs=sample.log_prob.float().cpu(), old_values=sample.value.float().cpu(),
                  advantages=torch.from_numpy(rng.normal(size=batch_size).astype(np.float32)),
                  returns=sample.value.float().cpu() + 0.1, mask=torch.ones(batch_size, dtype=torch.bool))
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    seconds = []
    for _ in range(2):  # the first allocates AdamW's state
        synchronize(device)
        started = time.perf_counter()
        with autocast(device):
            stats = updater.update(**inputs, critic_only=False)
        synchronize(device)
        seconds.append(time.perf_counter() - started)
    assert np.isfinite(stats["actor_loss"]) and np.isfinite(stats["grad_norm"])
    trainable = sum(p.numel() for p in updater.actor_params + updater.critic_params)
    peak = torch.cuda.max_memory_allocated() / GIB if device.startswith("cuda") else None
    return {"seconds": seconds[1], "first_update_seconds": seconds[0], "peak_gpu_memory_gib": peak, "minibatch": batch_size,
            "trainable_parameters": trainable, "parameters": sum(p.numel() for p in policy.parameters()),
            "backend": policy.backend}


# ----------------------------------------------------------------------------- main
def loop_minibatch() -> int:
    """The PPO minibatch the GPU setup of the loop uses."""
    import yaml

    return int(yaml.safe_load((REPO / "config" / "finetune_gpu.yaml").read_text())["mbpo"]["minibatch_size"])


def summary_line(figures: dict[str, Any]) -> str:
    if figures.get("status") != "measured":
        return f"gpu_check: not measured ({figures.get('reason', '')})"
    im, wm, ppo = figures["imagination"], figures["world_model_training"], figures["ppo_update"]
    memory = f"{ppo['peak_gpu_memory_gib']:.1f} GiB peak" if ppo["peak_gpu_memory_gib"] is not None else "no GPU memory (CPU)"
    return (f"gpu_check ({figures['scale']}, {figures['device']}): imagination {im['branches_per_s']:.2f} branches/s "
            f"(B={im['batch']}, 2 views, IVD, {im['image_tokens_per_view']} tokens/view) | {ppo['backend']} PPO update "
            f"{ppo['seconds']:.2f} s, {memory} (minibatch {ppo['minibatch']}) | world-model step {wm['seconds_per_step']:.2f} s "
            f"(batch {wm['batch']})")


def run(args: argparse.Namespace) -> dict[str, Any]:
    scale = TOY if args.tiny else JANUS_PRO_1B
    device = args.device or ("cpu" if args.tiny else "cuda")
    figures: dict[str, Any] = {"scale": "tiny" if args.tiny else "janus-pro-1b + pi0.5", "device": device}
    if device.startswith("cuda") and not torch.cuda.is_available():
        return {**figures, "status": "not measured", "reason": "no CUDA device on this machine"}
    if device.startswith("cuda"):
        figures["gpu"] = torch.cuda.get_device_name()
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    started = time.perf_counter()
    log(f"world model: building ({figures['scale']}) on {device}")
    model = build_world_model(scale, device)
    figures["world_model_parameters"] = model.num_parameters()
    log(f"world model: {model.num_parameters() / 1e9:.3f} B parameters; imagination at B={scale.branches}")
    figures["imagination"] = measure_imagination(model, scale, device)
    log(f"imagination: {figures['imagination']}")
    figures["world_model_training"] = measure_world_model_step(model, scale, device)
    log(f"world-model training: {figures['world_model_training']}")
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as workdir:
        log("policy: building " + ("a tiny SmolVLA" if args.tiny else "pi0.5"))
        policy = build_tiny_smolvla(Path(workdir)) if args.tiny else build_pi05(scale, device, Path(workdir))
        figures["ppo_update"] = measure_ppo(policy, scale, device, args.ppo_batch or scale.ppo_batch or loop_minibatch())
    log(f"PPO update: {figures['ppo_update']}")
    figures.update(status="measured", total_seconds=time.perf_counter() - started,
                   peak_rss_gib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="JSON file for the figures")
    parser.add_argument("--tiny", action="store_true", help="toy sizes on the CPU: checks the code path only")
    parser.add_argument("--device", default="", help="default: cuda (cpu with --tiny)")
    parser.add_argument("--ppo-batch", type=int, default=0, help="PPO minibatch (default: config/finetune_gpu.yaml's 512)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: all cores)")
    args = parser.parse_args(argv)
    figures = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2, default=float))
    print(summary_line(figures), flush=True)
    return 0 if figures["status"] == "measured" else 2


if __name__ == "__main__":
    sys.exit(main())
