"""``UMMWorldModel``: the UMM as the RL side's world model (dynamics + reward), and its persistence.

Two constructors, one code path: :meth:`UMMWorldModel.from_pretrained` loads any local directory with a
Janus model, tokenizer and image processor (a real Janus-Pro checkpoint, or one this class saved);
:meth:`UMMWorldModel.tiny` builds a few-M-parameter model with random weights and an in-process tokenizer.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset

from transformers import (
    AutoImageProcessor,
    AutoTokenizer,
    JanusForConditionalGeneration,
    JanusImageProcessor,
)

from vla_mbpo_ros.core.data.episode import Episode
from vla_mbpo_ros.core.util.images import resize_uint8
from vla_mbpo_ros.core.world_model.codec import ActionCodec, ActionStats
from vla_mbpo_ros.core.world_model.configuration import (
    IMAGE_TOKENS,
    WORLD_MODEL_CONFIG_FILE,
    TinyArchConfig,
    WorldModelConfig,
    build_tiny_tokenizer,
    tiny_janus_config,
)
from vla_mbpo_ros.core.world_model.data import (
    DataConfig,
    DynamicsSamples,
    GeneratedRewardSamples,
    GeneratedTransitionSamples,
    build_samples,
    labelled_transitions,
)
from vla_mbpo_ros.core.world_model.modeling import UMMCore
from vla_mbpo_ros.core.world_model.sequence import CURRENT, ImageRef


class UMMWorldModel:
    """Dynamics + reward world model over multi-view images and text-coded action chunks.

    Implements the RL side's ``WorldModel`` interface: :meth:`step`, :meth:`save_pretrained`,
    :meth:`from_pretrained`.
    """

    def __init__(self, core: UMMCore, codec: ActionCodec, seed: int = 0) -> None:
        if codec.n_bins != core.config.n_bins:
            raise ValueError(f"codec n_bins {codec.n_bins} != config n_bins {core.config.n_bins}")
        self.core = core
        self.codec = codec
        self.seed = seed
        self._generator: torch.Generator | None = None
        self._generated: OrderedDict[bytes, torch.Tensor] = OrderedDict()
        self._last_tokens: dict[str, torch.Tensor] = {}

    @property
    def config(self) -> WorldModelConfig:
        return self.core.config

    @property
    def view_names(self) -> tuple[str, ...]:
        return self.core.config.view_names

    @property
    def device(self) -> torch.device:
        return self.core.device

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.core.parameters())

    def to(self, device: str | torch.device) -> "UMMWorldModel":
        self.core.to(device)
        self._generator = None
        self.forget_generated()
        return self

    def forget_generated(self) -> None:
        """Drop the remembered VQ ids of generated views (the tokenizer or the device changed)."""
        self._generated.clear()

    def _rng(self) -> torch.Generator | None:
        if self.config.temperature == 0:
            return None
        if self._generator is None or self._generator.device != self.device:
            self._generator = torch.Generator(self.device).manual_seed(self.seed)
        return self._generator

    def _current(self, views: dict[str, np.ndarray], batch: int) -> dict[str, torch.Tensor]:
        current = {}
        for name in self.view_names:
            if name not in views:
                raise ValueError(f"views lacks {name!r}; the model expects {self.view_names}")
            images = np.asarray(views[name])
            if images.dtype != np.uint8 or images.ndim != 4 or images.shape[0] != batch or images.shape[-1] != 3:
                raise ValueError(f"views[{name!r}] must be ({batch},H,W,3) uint8, got {images.dtype} {images.shape}")
            current[name] = torch.from_numpy(np.ascontiguousarray(images)).to(self.device)
        return current

    @torch.no_grad()
    def predict_model_size(self, views: dict[str, np.ndarray], chunks: np.ndarray) -> dict[str, torch.Tensor]:
        """Next views at the model's image size, (B, S, S, 3) uint8 tensors on the model device."""
        chunks = np.asarray(chunks, dtype=np.float32)
        if chunks.ndim != 3:
            raise ValueError(f"chunks must be (B, k, d), got {chunks.shape}")
        current = self._current(views, chunks.shape[0])
        texts = [self.codec.to_text(c) for c in chunks]
        self.core.eval()
        tokens, _ = self.core.predict_tokens(current, texts, self._rng(), self._generated_ids(views))
        self._last_tokens = tokens
        return {v: self.core.vq_decode(t) for v, t in tokens.items()}

    # In a rollout the views of chunk c + 1 are the ones generated for chunk c: their VQ ids are known, so
    # they are not encoded again (and the model continues from exactly the tokens it generated).
    _GENERATED_CACHE = 4096  # views remembered (a few refills' worth of branches)

    @staticmethod
    def _digest(image: np.ndarray) -> bytes:
        return hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=16,
                               person=str(image.shape).encode()[:16]).digest()

    def _remember_generated(self, views: dict[str, np.ndarray]) -> None:
        for name, images in views.items():
            for image, ids in zip(images, self._last_tokens[name]):
                self._generated[self._digest(image)] = ids
        while len(self._generated) > self._GENERATED_CACHE:
            self._generated.popitem(last=False)

    def _generated_ids(self, views: dict[str, np.ndarray]) -> dict[ImageRef, torch.Tensor]:
        known = {}
        for name in self.view_names:
            ids = [self._generated.get(self._digest(image)) for image in views[name]]
            if ids and all(i is not None for i in ids):
                known[ImageRef(name, CURRENT)] = torch.stack(ids)
        return known

    def training_samples(self, episodes: Sequence[Episode], data: DataConfig) -> tuple[DynamicsSamples, Dataset]:
        """Dynamics and reward samples of ``episodes``; with ``data.generated_reward`` the reward samples also
        hold what this model generates from their labelled transitions (made before training): head frames
        (``reward_from: next_frame``) or transitions from generated views (``transition``)."""
        dynamics, reward = build_samples(episodes, self.view_names, data, self.config.reward_from)
        if data.generated_reward:
            generated = (self.generated_transition_samples(episodes, data) if self.config.reward_from == "transition"
                         else self.generated_reward_samples(episodes, data))
            reward = ConcatDataset([reward, generated])
        return dynamics, reward

    def generated_transition_samples(self, episodes: Sequence[Episode], data: DataConfig,
                                     batch_size: int = 32) -> GeneratedTransitionSamples:
        """Each labelled transition (t, chunk, label of t + k) with t >= k, its current views replaced by the
        ones this model generates from the real views at t - k and the real chunk before (as a rollout's
        second chunk sees them); at the episodes' view size."""
        k = data.chunk_size
        transitions = [(e, t, yes) for e, t, yes in labelled_transitions(episodes, data) if t >= k]
        generated: dict[str, list[np.ndarray]] = {v: [] for v in self.view_names}
        for first in range(0, len(transitions), batch_size):
            batch = transitions[first:first + batch_size]
            views = {v: np.stack([episodes[e].views[v][t - k] for e, t, _ in batch]) for v in self.view_names}
            chunks = np.stack([episodes[e].actions[t - k:t] for e, t, _ in batch])
            for v, images in self.predict(views, chunks).items():
                generated[v].append(images)
        views = {v: np.concatenate(x) if x else np.zeros((0, 1, 1, 3), np.uint8) for v, x in generated.items()}
        actions = np.stack([episodes[e].actions[t:t + k] for e, t, _ in transitions]) if transitions else \
            np.zeros((0, k, 0), np.float32)
        return GeneratedTransitionSamples(views, actions, np.array([yes for _, _, yes in transitions], dtype=bool),
                                          [episodes[e].instruction for e, _, _ in transitions], data.yes_oversample)

    def generated_reward_samples(self, episodes: Sequence[Episode], data: DataConfig,
                                 batch_size: int = 32) -> GeneratedRewardSamples:
        """The head view this model generates from each labelled transition's real views and real chunk, with
        the real label of the target frame; at the episodes' view size (batched with their real frames), as
        :meth:`step` returns it."""
        transitions = labelled_transitions(episodes, data)
        images = []
        for first in range(0, len(transitions), batch_size):
            batch = transitions[first:first + batch_size]
            views = {v: np.stack([episodes[e].views[v][t] for e, t, _ in batch]) for v in self.view_names}
            chunks = np.stack([episodes[e].actions[t:t + data.chunk_size] for e, t, _ in batch])
            images.append(self.predict(views, chunks)[self.view_names[0]])
        head = np.concatenate(images) if images else np.zeros((0, 1, 1, 3), np.uint8)
        return GeneratedRewardSamples(head, np.array([yes for _, _, yes in transitions], dtype=bool),
                                      [episodes[e].instruction for e, _, _ in transitions], data.yes_oversample)

    def reward_samples(self, episodes: Sequence[Episode], data: DataConfig):
        """The labelled samples this model's reward answers about (``reward_from``): head frames, or
        transitions labelled with the frame k steps later."""
        return build_samples(episodes, self.view_names, data, self.config.reward_from)[1]

    @torch.no_grad()
    def success_probability_from_tensor(self, head_images: torch.Tensor, instructions: Sequence[str]) -> np.ndarray:
        """(B,) P(Yes | Yes or No) to "is the task done?" about each head image."""
        self.core.eval()
        logits = self.core.answer_logits(head_images, list(instructions))
        return self.core.yes_probability(logits).cpu().numpy().astype(np.float32)

    @torch.no_grad()
    def transition_success_probability(self, views: dict[str, np.ndarray], chunks: np.ndarray,
                                       instructions: Sequence[str]) -> np.ndarray:
        """(B,) P(Yes | Yes or No) to "will the task be done after these actions?" about each branch's
        current views and action chunk (``reward_from: transition``)."""
        chunks = np.asarray(chunks, dtype=np.float32)
        current = self._current(views, chunks.shape[0])
        self.core.eval()
        logits = self.core.outcome_logits(current, [self.codec.to_text(c) for c in chunks], list(instructions),
                                          self._generated_ids(views))
        return self.core.yes_probability(logits).cpu().numpy().astype(np.float32)

    def success_probability(self, head_images: np.ndarray, instructions: Sequence[str]) -> np.ndarray:
        images = np.asarray(head_images)
        if images.ndim != 4 or len(instructions) != images.shape[0]:
            raise ValueError("the reward needs (B,H,W,3) images and B instructions")
        return self.success_probability_from_tensor(torch.from_numpy(np.ascontiguousarray(images)), instructions)

    def reward(self, head_images: np.ndarray, instructions: Sequence[str]) -> np.ndarray:
        """(B,) float32: 1 where P(Yes) to "is the task done?" on the head image exceeds the threshold."""
        return (self.success_probability(head_images, instructions) > self.config.reward_threshold).astype(np.float32)

    def predict(self, views: dict[str, np.ndarray], chunks: np.ndarray) -> dict[str, np.ndarray]:
        """Views k steps later (frame skipping), at the input size: name -> (B,H,W,3) uint8."""
        predicted = self.predict_model_size(views, chunks)
        result = {v: resize_uint8(predicted[v], views[v].shape[1:3]).cpu().numpy() for v in self.view_names}
        self._remember_generated(result)
        return result

    def step(
        self, views: dict[str, np.ndarray], chunks: np.ndarray, instructions: list[str]
    ) -> tuple[dict[str, np.ndarray], np.ndarray] | tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        """One imagined chunk for B branches: next views (input size, uint8), reward (B,) in {0, 1} (read from
        the generated head view, or from the views and chunk: ``reward_from``) and,
        with ``state_from_actions``, the next joint states (B, d): the chunks' last actions."""
        if len(instructions) != np.shape(chunks)[0]:
            raise ValueError(f"{len(instructions)} instructions for {np.shape(chunks)[0]} chunks")
        if self.config.reward_from == "transition":
            probability = self.transition_success_probability(views, chunks, instructions)
        predicted = self.predict_model_size(views, chunks)
        if self.config.reward_from == "next_frame":
            probability = self.success_probability_from_tensor(predicted[self.view_names[0]], instructions)
        reward = (probability > self.config.reward_threshold).astype(np.float32)
        next_views = {v: resize_uint8(predicted[v], views[v].shape[1:3]).cpu().numpy() for v in self.view_names}
        self._remember_generated(next_views)
        if self.config.state_from_actions:
            return next_views, reward, np.asarray(chunks, dtype=np.float32)[:, -1].copy()
        return next_views, reward

    # -- persistence ------------------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> None:
        """Weights (safetensors), tokenizer, image processor, world-model config and action statistics."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.core.janus.save_pretrained(directory)
        self.core.tokenizer.save_pretrained(directory)
        self.core.image_processor.save_pretrained(directory)
        (directory / WORLD_MODEL_CONFIG_FILE).write_text(json.dumps(self.config.to_dict(), indent=2))
        self.codec.stats.save(directory)

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        *,
        view_names: Sequence[str] | None = None,
        action_stats: ActionStats | None = None,
        config_overrides: dict | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
    ) -> "UMMWorldModel":
        """Load from a local directory: one this class saved, or a Janus checkpoint (then pass
        ``view_names`` and ``action_stats``, which a plain checkpoint does not contain)."""
        directory = Path(directory)
        config_path = directory / WORLD_MODEL_CONFIG_FILE
        data = json.loads(config_path.read_text()) if config_path.exists() else {}
        if view_names is not None:
            data["view_names"] = list(view_names)
        data.update(config_overrides or {})
        if "view_names" not in data:
            raise ValueError(f"{directory} has no {WORLD_MODEL_CONFIG_FILE}: pass view_names")
        config = WorldModelConfig(**data)
        if action_stats is None:
            action_stats = ActionStats.load(directory)
        janus = JanusForConditionalGeneration.from_pretrained(directory, dtype=dtype).to(device).eval()
        tokenizer = AutoTokenizer.from_pretrained(directory)
        image_processor = AutoImageProcessor.from_pretrained(directory)
        core = UMMCore(janus, tokenizer, image_processor, config)
        return cls(core, ActionCodec(action_stats, config.n_bins))

    @classmethod
    def tiny(
        cls,
        view_names: Sequence[str],
        action_stats: ActionStats,
        image_size: int = 32,
        seed: int = 0,
        *,
        arch: TinyArchConfig | None = None,
        config: WorldModelConfig | None = None,
        instructions: Sequence[str] = (),
    ) -> "UMMWorldModel":
        """A few-M-parameter Janus with random weights (CPU, tests). ``instructions`` seed the tokenizer's
        vocabulary; other text still tokenizes (character fallback)."""
        arch = arch or TinyArchConfig(image_size=image_size)
        if arch.image_size != image_size:
            raise ValueError(f"image_size {image_size} != arch.image_size {arch.image_size}")
        config = config or WorldModelConfig(view_names=tuple(view_names))
        if tuple(config.view_names) != tuple(view_names):
            raise ValueError(f"config.view_names {config.view_names} != view_names {tuple(view_names)}")
        tokenizer = build_tiny_tokenizer(view_names, config.prompts, config.n_bins, instructions, arch.tokenizer_vocab_size)
        janus_config = tiny_janus_config(
            arch, len(tokenizer), tokenizer.convert_tokens_to_ids(IMAGE_TOKENS["image_token"]), tokenizer.pad_token_id
        )
        torch.manual_seed(seed)
        janus = JanusForConditionalGeneration(janus_config).eval()
        image_processor = JanusImageProcessor(
            size={"height": arch.image_size, "width": arch.image_size}, image_mean=[0.5] * 3, image_std=[0.5] * 3
        )
        core = UMMCore(janus, tokenizer, image_processor, config)
        return cls(core, ActionCodec(action_stats, config.n_bins), seed=seed)
