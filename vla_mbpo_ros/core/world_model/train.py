"""Finetune the UMM world model on recorded episodes (one CPU process, or multi-GPU with accelerate).

Loss = image_loss_weight x (CE of the target VQ tokens) + answer_loss_weight x (CE of the Yes/No answer),
AdamW; the understanding encoder is frozen by default and the VQ tokenizer always is (its discrete tokens
pass no gradient). A model built from random weights (``init: tiny``) first fits its VQ tokenizer as an
autoencoder (``vq_fit_steps``): a random tokenizer cannot reconstruct images, so nothing downstream could
be measured in pixels. Frames are tokenized once, before training.

    python -m vla_mbpo_ros.core.world_model.train --config config/world_model.yaml \\
        --dataset-root DATA --output CKPT [--init tiny|CHECKPOINT_DIR]
    accelerate launch -m vla_mbpo_ros.core.world_model.train ...   # same script, several GPUs
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from vla_mbpo_ros.core.data.reader import load_episodes
from vla_mbpo_ros.core.util.config import load_config
from vla_mbpo_ros.core.util.precision import cast_for_training
from vla_mbpo_ros.core.world_model.configuration import TinyArchConfig, WorldModelConfig
from vla_mbpo_ros.core.world_model.data import (
    DataConfig,
    DynamicsSamples,
    RewardSamples,
    action_stats,
    build_samples,
    split_episodes,
)
from vla_mbpo_ros.core.world_model.modeling import UMMCore
from vla_mbpo_ros.core.world_model.umm import UMMWorldModel


@dataclass
class TrainConfig:
    steps: int = 5000
    batch_size: int = 8  # dynamics samples per step (per process)
    reward_batch_size: int = 8  # reward questions per step (per process)
    lr: float = 2e-5
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = 100
    grad_clip: float = 1.0
    image_loss_weight: float = 1.0
    answer_loss_weight: float = 0.01
    freeze_vision: bool = True  # understanding encoder (the aligner still trains)
    train_llm_layers: int = 0  # > 0: only the LLM's last N layers (+ final norm, generation head, aligners) train
    gradient_checkpointing: bool = False  # recompute the LLM layers' activations in backward
    vq_fit_steps: int = 0  # > 0: fit the VQ tokenizer first (random-weight models only)
    vq_fit_lr: float = 1e-3
    vq_fit_batch_size: int = 32
    vq_commitment: float = 0.25
    vq_restart_every: int = 50  # re-seed unused codes from current encoder outputs every N fit steps
    seed: int = 0
    num_workers: int = 0
    log_every: int = 25
    save_every: int = 0  # > 0: every N steps, a resumable checkpoint in <output>/resume (0: save at the end)
    mixed_precision: str = "no"  # accelerate: "no" | "bf16" | "fp16"

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)
        for name in ("steps", "batch_size", "reward_batch_size", "vq_fit_batch_size", "vq_restart_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "vq_fit_lr"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("warmup_steps", "vq_fit_steps", "save_every", "num_workers", "weight_decay", "grad_clip"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.image_loss_weight < 0 or self.answer_loss_weight < 0:
            raise ValueError("image_loss_weight and answer_loss_weight must be >= 0")


@dataclass
class TrainHistory:
    image_loss: list[float] = field(default_factory=list)
    answer_loss: list[float] = field(default_factory=list)
    vq_recon_loss: list[float] = field(default_factory=list)
    resumed_at: int = 0  # optimizer step the run resumed from (0: a fresh run)


RESUME_DIR = "resume"  # <output>/resume: the model and TRAINER_STATE of the last save_every step
TRAINER_STATE = "trainer_state.pt"


def resume_point(output_dir: str | Path | None) -> Path | None:
    """The resumable checkpoint a previous, interrupted run left in ``output_dir`` (None: start afresh)."""
    if not output_dir:
        return None
    directory = Path(output_dir) / RESUME_DIR
    return directory if (directory / TRAINER_STATE).is_file() else None


def _cycle(loader: DataLoader) -> Iterator:
    while True:
        yield from loader


def fit_vq_tokenizer(core: UMMCore, frames: np.ndarray, config: TrainConfig, progress: bool = False) -> list[float]:
    """Fit the VQ encoder/codebook/decoder as an autoencoder on (N,H,W,3) uint8 frames.

    Same quantisation as inference (cosine nearest code on unit vectors) with a straight-through
    estimator, codebook + commitment losses, a data-dependent codebook start and re-seeding of codes
    that went unused, which small codebooks on few images otherwise suffer from.
    """
    vq = core.janus.model.vqmodel
    codebook = vq.quantize.embedding.weight
    grid = vq.quantize.quant_state_dims
    generator = torch.Generator().manual_seed(config.seed)
    images = torch.from_numpy(frames)
    with torch.no_grad():
        sample = images[torch.randperm(len(images), generator=generator)[: max(1, codebook.shape[0] // grid[0])]]
        latents = core.vq_latents(sample).reshape(-1, codebook.shape[1])
        pick = torch.randint(len(latents), (codebook.shape[0],), generator=generator)
        codebook.copy_(latents[pick] + 0.01 * torch.randn(codebook.shape, generator=generator).to(codebook.device))
    was_trainable = [p.requires_grad for p in vq.parameters()]
    vq.requires_grad_(True)
    vq.train()
    optimizer = torch.optim.Adam(vq.parameters(), lr=config.vq_fit_lr)
    usage = torch.zeros(codebook.shape[0], device=codebook.device)
    losses = []
    for step in tqdm(range(config.vq_fit_steps), desc="vq fit", disable=not progress):
        batch = images[torch.randint(len(images), (config.vq_fit_batch_size,), generator=generator)]
        z = core.vq_latents(batch)  # (B, n, c), unit norm
        codes = F.normalize(codebook, dim=-1)
        index = (z.detach() @ codes.T).argmax(-1)
        quantized = codes[index]
        vq_loss = F.mse_loss(quantized, z.detach()) + config.vq_commitment * F.mse_loss(z, quantized.detach())
        straight = z + (quantized - z).detach()
        hidden = vq.post_quant_conv(straight.transpose(1, 2).reshape(len(batch), -1, grid[0], grid[1]))
        decoded = vq.decoder(hidden)
        target = core._pixels(batch, core.vq_size, decoded.dtype) * 2.0 - 1.0
        recon = F.mse_loss(decoded, target)
        optimizer.zero_grad(set_to_none=True)
        (recon + vq_loss).backward()
        optimizer.step()
        losses.append(recon.item())
        usage += torch.bincount(index.reshape(-1), minlength=codebook.shape[0]).to(usage)
        if (step + 1) % config.vq_restart_every == 0:
            dead = torch.nonzero(usage == 0).squeeze(1)
            if len(dead):
                pool = z.detach().reshape(-1, z.shape[-1])
                with torch.no_grad():
                    codebook[dead] = pool[torch.randint(len(pool), (len(dead),), generator=generator)].to(codebook)
            usage.zero_()
    vq.eval()
    for p, trainable in zip(vq.parameters(), was_trainable):
        p.requires_grad_(trainable)
    return losses


@torch.no_grad()
def tokenize_episodes(
    core: UMMCore, episodes, view_names, batch_size: int = 64
) -> list[dict[str, np.ndarray]]:
    """VQ ids of every frame of every episode: per episode, view -> (T, n_vq) int64."""
    result = []
    for ep in episodes:
        ids = {}
        for view in view_names:
            frames = torch.from_numpy(ep.views[view])
            chunks = [core.vq_encode(core.to_model_size(frames[i : i + batch_size])) for i in range(0, len(frames), batch_size)]
            ids[view] = torch.cat(chunks).cpu().numpy()
        result.append(ids)
    return result


def _set_trainable(core: UMMCore, config: TrainConfig) -> list[torch.nn.Parameter]:
    core.janus.requires_grad_(True)
    core.janus.model.vision_model.requires_grad_(not config.freeze_vision)
    # The VQ tokenizer gets no gradient from these losses (its tokens are discrete targets/inputs);
    # only fit_vq_tokenizer trains it, before this stage.
    core.janus.model.vqmodel.requires_grad_(False)
    if config.train_llm_layers:
        llm = core.janus.model.language_model
        frozen_layers = len(llm.layers) - config.train_llm_layers
        if frozen_layers < 0:
            raise ValueError(f"train_llm_layers {config.train_llm_layers} > the LLM's {len(llm.layers)} layers")
        llm.embed_tokens.requires_grad_(False)
        core.janus.lm_head.requires_grad_(False)
        for layer in llm.layers[:frozen_layers]:
            layer.requires_grad_(False)
    return [p for p in core.parameters() if p.requires_grad]


def _prepare_precision(core: UMMCore, params: list[torch.nn.Parameter], config: TrainConfig) -> None:
    """bf16 mixed precision: fp32 masters for what trains, bf16 for what is frozen (util/precision.py);
    and the LLM's gradient checkpointing switch."""
    if config.mixed_precision == "bf16":
        cast_for_training(core.janus, params, torch.bfloat16)
    llm = core.janus.model.language_model
    if config.gradient_checkpointing:
        llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    elif getattr(llm, "is_gradient_checkpointing", False):
        llm.gradient_checkpointing_disable()


def train_world_model(
    model: UMMWorldModel,
    dynamics: DynamicsSamples,
    reward: RewardSamples | None,
    config: TrainConfig,
    *,
    output_dir: str | Path | None = None,
    accelerator=None,
    progress: bool = True,
) -> TrainHistory:
    """Finetune ``model`` in place on dynamics (+ reward) samples; saves to ``output_dir`` when given."""
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from accelerate.utils import set_seed

    if len(dynamics) == 0:
        raise ValueError("no dynamics samples: episodes must be longer than chunk_size")
    use_reward = reward is not None and len(reward) > 0 and config.answer_loss_weight > 0
    if accelerator is None:
        # Without reward questions the text head gets no gradient: DDP must be told.
        ddp = DistributedDataParallelKwargs(find_unused_parameters=not use_reward)
        # Without a GPU, accelerate joins torchrun's processes only when told it runs on the CPU (else each
        # process trains alone); with one, it takes the GPU as before.
        accelerator = Accelerator(mixed_precision=config.mixed_precision, kwargs_handlers=[ddp],
                                  cpu=not torch.cuda.is_available())
    set_seed(config.seed)
    history = TrainHistory()
    model.forget_generated()  # a refitted tokenizer gives other ids
    core = model.core
    resume = resume_point(output_dir) if config.save_every else None
    state = _load_resume(core, resume) if resume else None
    core.to(accelerator.device)
    if config.vq_fit_steps and state is None:  # a resumed model's tokenizer was fitted before it was saved
        frames = np.concatenate(
            [np.concatenate([ep.views[v] for v in model.view_names]) for ep in dynamics.episodes]
        )
        history.vq_recon_loss = fit_vq_tokenizer(core, frames, config, progress and accelerator.is_main_process)
    if accelerator.num_processes > 1:
        # Every process tokenizes with, and starts from, rank 0's weights (DDP would broadcast them
        # only at prepare(), after the frames were already turned into tokens).
        for tensor in core.state_dict().values():
            torch.distributed.broadcast(tensor, src=0)
    params = _set_trainable(core, config)
    _prepare_precision(core, params, config)
    dynamics.set_tokens(tokenize_episodes(core, dynamics.episodes, model.view_names))
    optimizer = torch.optim.AdamW(params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    warmup = max(1, config.warmup_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))
    first_step = 0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        first_step = history.resumed_at = int(state["step"])
        history.image_loss, history.answer_loss = list(state["image_loss"]), list(state["answer_loss"])
        history.vq_recon_loss = list(state["vq_recon_loss"])
    # A resumed run reshuffles from another seed rather than replaying the batches it already saw.
    shuffle_seed = config.seed + first_step
    loader_kwargs = dict(shuffle=True, num_workers=config.num_workers, generator=torch.Generator().manual_seed(shuffle_seed))
    dyn_loader = DataLoader(
        dynamics, batch_size=config.batch_size, drop_last=len(dynamics) >= config.batch_size, **loader_kwargs
    )
    loaders = [dyn_loader]
    if use_reward:
        loaders.append(
            DataLoader(reward, batch_size=config.reward_batch_size, drop_last=len(reward) >= config.reward_batch_size, **loader_kwargs)
        )
    core.train()
    # The scheduler stays unwrapped: warm-up counts optimizer steps whatever the number of processes.
    wrapped, optimizer, *loaders = accelerator.prepare(core, optimizer, *loaders)
    dyn_iter = _cycle(loaders[0])
    rew_iter = _cycle(loaders[1]) if use_reward else None
    bar = tqdm(range(first_step, config.steps), desc="world model", initial=first_step, total=config.steps,
               disable=not (progress and accelerator.is_main_process))
    for step in bar:
        batch = next(dyn_iter)
        texts = [model.codec.to_text(a) for a in batch["actions"].float().cpu().numpy()]
        dyn = {**batch, "action_text": texts}
        rew = next(rew_iter) if rew_iter else None
        if rew is not None and "actions" in rew:  # transition questions read the chunk as text too
            rew = {**rew, "action_text": [model.codec.to_text(a) for a in rew["actions"].float().cpu().numpy()]}
        losses = wrapped(dynamics=dyn, reward=rew)
        loss = config.image_loss_weight * losses["image"]
        if "answer" in losses:
            loss = loss + config.answer_loss_weight * losses["answer"]
        accelerator.backward(loss)
        if config.grad_clip:
            accelerator.clip_grad_norm_(params, config.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        history.image_loss.append(losses["image"].item())
        if "answer" in losses:
            history.answer_loss.append(losses["answer"].item())
        if (step + 1) % config.log_every == 0:
            window = slice(-config.log_every, None)
            post = {"image": np.mean(history.image_loss[window])}
            if history.answer_loss:
                post["answer"] = np.mean(history.answer_loss[window])
            bar.set_postfix({k: f"{v:.3f}" for k, v in post.items()}, refresh=False)  # shown with the step's own display
        if output_dir and config.save_every and (step + 1) % config.save_every == 0 and step + 1 < config.steps:
            _save_resume(model, accelerator, Path(output_dir) / RESUME_DIR, step + 1, optimizer, scheduler, history)
    core.eval()
    if output_dir:
        _save(model, accelerator, Path(output_dir))
        if accelerator.is_main_process and resume_point(output_dir):
            shutil.rmtree(Path(output_dir) / RESUME_DIR)  # finished: nothing to resume
    return history


def _save(model: UMMWorldModel, accelerator, directory: Path) -> None:
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        model.save_pretrained(directory)


def _save_resume(model: UMMWorldModel, accelerator, directory: Path, step: int, optimizer, scheduler,
                 history: TrainHistory) -> None:
    """Model + optimizer state, written next to the old checkpoint and swapped in by renames, so an
    interruption at any moment leaves one complete checkpoint."""
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return
    staging = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    torch.save({"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "image_loss": history.image_loss, "answer_loss": history.answer_loss,
                "vq_recon_loss": history.vq_recon_loss}, staging / TRAINER_STATE)
    old = directory.with_name(directory.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        directory.rename(old)
    staging.rename(directory)
    shutil.rmtree(old, ignore_errors=True)


def _load_resume(core: UMMCore, directory: Path) -> dict:
    """Load the weights saved in ``directory`` into ``core``; returns the trainer state saved with them."""
    from safetensors.torch import load_file

    weights = {}
    for file in sorted(directory.glob("*.safetensors")):
        weights.update(load_file(file))
    missing, unexpected = core.janus.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise ValueError(f"{directory}: the checkpoint does not match this model "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]}); delete it to start afresh")
    return torch.load(directory / TRAINER_STATE, weights_only=False)


# -- CLI ----------------------------------------------------------------------------------------------------


@dataclass
class SourceConfig:
    """Where the episodes come from and how they are read."""

    view_keys: dict[str, str] = field(
        default_factory=lambda: {"head": "observation.images.head", "wrist": "observation.images.wrist"}
    )
    repo_id: str = "local/dataset"
    holdout_episodes: int = 1
    action_quantiles: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        self.action_quantiles = tuple(self.action_quantiles)
        if not self.view_keys:
            raise ValueError("view_keys must name at least the head view")
        if self.holdout_episodes < 0:
            raise ValueError(f"holdout_episodes must be >= 0, got {self.holdout_episodes}")


def read_sections(path: str | Path | None) -> dict:
    """The world-model YAML as plain dicts per section (missing sections -> defaults)."""
    data = yaml.safe_load(Path(path).read_text()) if path else {}
    known = {"world_model", "tiny", "data", "source", "train", "eval"}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown sections in {path}: {sorted(unknown)}")
    return {k: data.get(k) or {} for k in known}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="config/world_model.yaml")
    parser.add_argument("--dataset-root", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--init", default="tiny", help="'tiny' (random weights) or a checkpoint directory")
    parser.add_argument("--steps", type=int, help="override train.steps")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sections = read_sections(args.config)
    if args.steps:
        sections["train"]["steps"] = args.steps
    source = load_config(SourceConfig, sections["source"], "source")
    data_config = load_config(DataConfig, sections["data"], "data")
    train_config = load_config(TrainConfig, sections["train"], "train")
    wm_values = dict(sections["world_model"])
    wm_values["view_names"] = tuple(source.view_keys)
    wm_config = load_config(WorldModelConfig, wm_values, "world_model")
    tiny_arch = load_config(TinyArchConfig, sections["tiny"], "tiny")

    image_size = tiny_arch.image_size if args.init == "tiny" else None
    episodes = load_episodes(args.dataset_root, tuple(source.view_keys), image_size, source.repo_id, view_keys=source.view_keys)
    train_eps, held_eps = split_episodes(episodes, source.holdout_episodes, train_config.seed)
    stats = action_stats(train_eps, source.action_quantiles)
    if args.init == "tiny":
        instructions = sorted({ep.instruction for ep in episodes})
        model = UMMWorldModel.tiny(
            wm_config.view_names, stats, tiny_arch.image_size, train_config.seed,
            arch=tiny_arch, config=wm_config, instructions=instructions,
        )
    else:
        model = UMMWorldModel.from_pretrained(args.init, view_names=wm_config.view_names, action_stats=stats)
        train_config = dataclasses.replace(train_config, vq_fit_steps=0)
    dynamics, reward = build_samples(train_eps, wm_config.view_names, data_config, model.config.reward_from)
    history = train_world_model(model, dynamics, reward, train_config, output_dir=args.output)
    summary = {
        "train_episodes": len(train_eps),
        "held_out_episodes": len(held_eps),
        "dynamics_samples": len(dynamics),
        "reward_samples": len(reward),
        "image_loss_first_last": _ends(history.image_loss),
        "answer_loss_first_last": _ends(history.answer_loss),
        "parameters": model.num_parameters(),
    }
    Path(args.output).mkdir(parents=True, exist_ok=True)
    (Path(args.output) / "train_summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


def _ends(values: list[float], window: int = 25) -> list[float]:
    if not values:
        return []
    window = min(window, max(1, len(values) // 4))
    return [float(np.mean(values[:window])), float(np.mean(values[-window:]))]


if __name__ == "__main__":
    main()
