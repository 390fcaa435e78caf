"""UMM world model: one Janus model (transformers) as dynamics model and reward model.

``JanusForConditionalGeneration`` holds a SigLIP-style understanding encoder (+ aligner), a VQ image
tokenizer with its generation embeddings/head, and a Llama LLM. The world model uses the parts directly:
current views enter as understanding features and as VQ tokens, the action chunk as text, and the next
views are generated as VQ tokens (batched, KV cache), then decoded by the VQ decoder. The reward is the
model's Yes/No answer about the head view.

Two constructors, one code path: :meth:`UMMWorldModel.from_pretrained` loads any local directory with a
Janus model, tokenizer and image processor (a real Janus-Pro checkpoint, or one this class saved);
:meth:`UMMWorldModel.tiny` builds a few-M-parameter model with random weights and an in-process tokenizer.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from transformers import (  # noqa: E402  (offline mode must be set before transformers loads)
    AutoImageProcessor,
    AutoTokenizer,
    JanusConfig,
    JanusForConditionalGeneration,
    JanusImageProcessor,
    PreTrainedTokenizerFast,
)

from vla_mbpo_ros.core.world_model.codec import ActionCodec, ActionStats  # noqa: E402
from vla_mbpo_ros.core.world_model.sequence import (  # noqa: E402
    CURRENT,
    NEXT,
    ImageRef,
    PromptTemplates,
    RenderedSequence,
    SequenceSpec,
    TokenIds,
    dynamics_stages,
    render,
    reward_question,
)

WORLD_MODEL_CONFIG_FILE = "world_model_config.json"
_SPECIAL_TOKENS = {
    "pad_token": "<pad>",
    "unk_token": "<unk>",
    "bos_token": "<bos>",
    "eos_token": "<eos>",
}
_IMAGE_TOKENS = {"image_token": "<image_placeholder>", "boi_token": "<begin_of_image>", "eoi_token": "<end_of_image>"}


@dataclass
class WorldModelConfig:
    """How the UMM is used as a world model (saved next to the weights)."""

    view_names: tuple[str, ...] = ("head", "wrist")  # first = head (global) view
    n_bins: int = 256  # action text integers are 0..n_bins
    ivd: bool = True  # interleaved view decoding; False = every view from the inputs (ablation)
    vq_context: bool = True  # current views also enter as VQ tokens (copyable), not only as features
    temperature: float = 0.0  # image-token sampling temperature; 0 = greedy
    top_k: int = 0  # sample from the k most likely tokens; 0 = all
    prompts: PromptTemplates = field(default_factory=PromptTemplates)

    def __post_init__(self) -> None:
        self.view_names = tuple(self.view_names)
        if isinstance(self.prompts, dict):
            self.prompts = PromptTemplates(**self.prompts)
        if not self.view_names or len(set(self.view_names)) != len(self.view_names):
            raise ValueError(f"view_names must be non-empty and unique, got {self.view_names}")
        if self.n_bins < 1:
            raise ValueError(f"n_bins must be >= 1, got {self.n_bins}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["view_names"] = list(self.view_names)
        return data


@dataclass
class TinyArchConfig:
    """Architecture of the CPU/test model. Image tokens per view = tokens_per_side ** 2."""

    image_size: int = 32
    tokens_per_side: int = 8
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 256
    vision_hidden_size: int = 32
    vision_layers: int = 1
    codebook_size: int = 256
    code_dim: int = 8
    vq_channels: int = 32  # multiple of 32 (GroupNorm groups in the VQ)
    tokenizer_vocab_size: int = 700

    def __post_init__(self) -> None:
        if self.tokens_per_side < 1 or self.image_size % self.tokens_per_side:
            raise ValueError(f"image_size {self.image_size} must be a multiple of tokens_per_side")
        patch = self.image_size // self.tokens_per_side
        if patch < 2 or patch & (patch - 1):
            raise ValueError(f"image_size / tokens_per_side must be a power of two >= 2, got {patch}")
        if self.vq_channels % 32:
            raise ValueError(f"vq_channels must be a multiple of 32, got {self.vq_channels}")
        if self.hidden_size % self.num_heads:
            raise ValueError("hidden_size must be divisible by num_heads")


def build_tiny_tokenizer(
    view_names: Sequence[str], prompts: PromptTemplates, n_bins: int, instructions: Sequence[str], vocab_size: int
) -> PreTrainedTokenizerFast:
    """A BPE tokenizer trained in-process on the prompt vocabulary (no downloads).

    Every action integer and template word becomes one token; other text falls back to characters.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token=_SPECIAL_TOKENS["unk_token"]))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    special = list(_SPECIAL_TOKENS.values()) + list(_IMAGE_TOKENS.values())
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=list(string.printable.strip()),
        show_progress=False,
    )
    templates = dataclasses.asdict(prompts).values()
    filled = [
        t.format(view=v, head=view_names[0], actions="Step 0: [0]", instruction=i)
        for t in templates
        for v in view_names
        for i in list(instructions) or ["task"]
    ]
    corpus = [" ".join(str(i) for i in range(n_bins + 1))] * 8 + filled * 8
    tokenizer.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **_SPECIAL_TOKENS, extra_special_tokens=_IMAGE_TOKENS)


def tiny_janus_config(arch: TinyArchConfig, vocab_size: int, image_token_id: int, pad_token_id: int) -> JanusConfig:
    patch = arch.image_size // arch.tokens_per_side
    levels = int(math.log2(patch)) + 1  # the VQ downsamples by 2 between levels
    return JanusConfig(
        text_config=dict(
            model_type="llama",
            vocab_size=vocab_size,
            hidden_size=arch.hidden_size,
            intermediate_size=arch.intermediate_size,
            num_hidden_layers=arch.num_layers,
            num_attention_heads=arch.num_heads,
            num_key_value_heads=arch.num_heads,
            max_position_embeddings=4096,
            tie_word_embeddings=False,
            pad_token_id=pad_token_id,
        ),
        vision_config=dict(
            hidden_size=arch.vision_hidden_size,
            num_hidden_layers=arch.vision_layers,
            num_attention_heads=2,
            image_size=arch.image_size,
            patch_size=patch,
            projection_dim=arch.hidden_size,
            depth=1,
            mlp_ratio=2.0,
            num_image_tokens=arch.tokens_per_side**2,
        ),
        vq_config=dict(
            embed_dim=arch.code_dim,
            num_embeddings=arch.codebook_size,
            latent_channels=arch.vq_channels,
            base_channels=arch.vq_channels,
            channel_multiplier=[1, 1] + [2] * (levels - 2),
            num_res_blocks=1,
            projection_dim=arch.hidden_size,
            image_token_embed_dim=arch.hidden_size,
            num_hidden_layers=1,
        ),
        image_token_id=image_token_id,
        tie_word_embeddings=False,
    )


@dataclass
class Embedded:
    """A padded batch of sequences ready for the LLM."""

    inputs_embeds: torch.Tensor  # (R, L, D)
    attention_mask: torch.Tensor  # (R, L) long, 0 at padding
    position_ids: torch.Tensor  # (R, L)


class UMMCore(nn.Module):
    """The Janus model plus the glue that turns world-model sequences into LLM inputs and losses.

    An ``nn.Module`` so a trainer can hand it to accelerate/DDP and call ``forward`` (the losses).
    """

    def __init__(self, janus: JanusForConditionalGeneration, tokenizer, image_processor, config: WorldModelConfig):
        super().__init__()
        self.janus = janus
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.config = config
        vision = janus.config.vision_config
        grid = janus.model.vqmodel.quantize.quant_state_dims
        self.und_size = int(vision.image_size)
        self.n_und = (vision.image_size // vision.patch_size) ** 2
        self.n_vq = int(grid[0] * grid[1])
        self.vq_size = int(grid[0] * 2 ** (len(janus.config.vq_config.channel_multiplier) - 1))
        mean = torch.tensor(image_processor.image_mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(image_processor.image_std, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("und_mean", mean, persistent=False)
        self.register_buffer("und_std", std, persistent=False)
        self.special = TokenIds(
            boi=self._token_id(getattr(tokenizer, "boi_token", None) or _IMAGE_TOKENS["boi_token"]),
            eoi=self._token_id(getattr(tokenizer, "eoi_token", None) or _IMAGE_TOKENS["eoi_token"]),
        )
        self.yes_id = self._answer_id(config.prompts.yes)
        self.no_id = self._answer_id(config.prompts.no)
        if self.yes_id == self.no_id:
            raise ValueError("prompts.yes and prompts.no start with the same token")
        self._text_ids: dict[str, list[int]] = {}

    # -- tokens ---------------------------------------------------------------------------------------
    def _token_id(self, token: str) -> int:
        token_id = self.tokenizer.convert_tokens_to_ids(token)
        if token_id is None or token_id == self.tokenizer.unk_token_id:
            raise ValueError(f"tokenizer has no {token!r} token")
        return int(token_id)

    def _answer_id(self, answer: str) -> int:
        return int(self.tokenizer(" " + answer, add_special_tokens=False).input_ids[0])

    def text_ids(self, text: str) -> list[int]:
        """Token ids of a text piece; template strings repeat, so they are cached."""
        ids = self._text_ids.get(text)
        if ids is None:
            ids = self.tokenizer(text, add_special_tokens=False).input_ids
            if len(self._text_ids) < 4096:
                self._text_ids[text] = ids
        return ids

    def render(self, spec: SequenceSpec, include_target: bool) -> RenderedSequence:
        return render(spec, self.text_ids, self.special, self.n_und, self.n_vq, include_target)

    # -- images ---------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.janus.lm_head.weight.device

    def _pixels(self, images: torch.Tensor, size: int, dtype: torch.dtype) -> torch.Tensor:
        """(N,H,W,3) uint8 -> (N,3,size,size) float in [0, 1]. Non-square views are squashed."""
        x = images.to(self.device).permute(0, 3, 1, 2).float() / 255.0
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return x.to(dtype)

    def to_model_size(self, images: torch.Tensor) -> torch.Tensor:
        """(N,H,W,3) uint8 on any device -> (N,S,S,3) uint8 on the model device (S = image size)."""
        return _resize_uint8(images.to(self.device), (self.und_size, self.und_size))

    def und_features(self, images: torch.Tensor) -> torch.Tensor:
        """Understanding-encoder features projected to the LLM width: (N, n_und, D)."""
        vision = self.janus.model.vision_model
        dtype = vision.embeddings.patch_embedding.weight.dtype
        x = (self._pixels(images, self.und_size, torch.float32) - self.und_mean) / self.und_std
        trainable = any(p.requires_grad for p in vision.parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and trainable):
            hidden = vision(x.to(dtype)).last_hidden_state
        return self.janus.model.aligner(hidden)

    def vq_latents(self, images: torch.Tensor) -> torch.Tensor:
        """Unit-norm VQ encoder outputs (N, n_vq, code_dim), before quantisation."""
        vq = self.janus.model.vqmodel
        x = self._pixels(images, self.vq_size, vq.quant_conv.weight.dtype) * 2.0 - 1.0
        z = vq.quant_conv(vq.encoder(x))
        return F.normalize(z.flatten(2).transpose(1, 2), dim=-1)

    @torch.no_grad()
    def vq_encode(self, images: torch.Tensor) -> torch.Tensor:
        """(N,H,W,3) uint8 -> (N, n_vq) codebook ids.

        Nearest code by cosine, as Janus' VQ (LlamaGen, l2-normalised codebook) does and as the decoder
        in transformers expects (it l2-normalises the looked-up codes); transformers' own ``encode``
        compares unnormalised vectors, which would not match that decoder.
        """
        codebook = F.normalize(self.janus.model.vqmodel.quantize.embedding.weight, dim=-1)
        return (self.vq_latents(images) @ codebook.T).argmax(-1)

    @torch.no_grad()
    def vq_decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, n_vq) ids -> (N, vq_size, vq_size, 3) uint8."""
        pixels = self.janus.decode_image_tokens(tokens.to(self.device)).float()
        return ((pixels.clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)

    # -- sequences -> embeddings ------------------------------------------------------------------------
    def embed(
        self,
        rows: Sequence[tuple[int, RenderedSequence]],
        und: dict[ImageRef, torch.Tensor],
        vq: dict[ImageRef, torch.Tensor],
        pad_left: bool,
    ) -> Embedded:
        """Materialise rendered sequences. ``rows`` pairs a sample index with its sequence; ``und`` maps an
        image to its (B, n_und, D) features, ``vq`` to its (B, n_vq) token ids."""
        embed_tokens = self.janus.get_input_embeddings()
        needed = {p.image for _, r in rows for p in r.pieces if p.kind in ("vq", "target")}
        vq_emb = {ref: self.janus.prepare_embeddings_for_image_generation(vq[ref].to(self.device)) for ref in needed}
        flat_ids = [i for _, r in rows for p in r.pieces if p.kind == "text" for i in p.ids]
        text_emb = embed_tokens(torch.tensor(flat_ids, dtype=torch.long, device=self.device))
        sequences, offset = [], 0
        for sample, rendered in rows:
            parts = []
            for piece in rendered.pieces:
                if piece.kind == "text":
                    parts.append(text_emb[offset : offset + piece.length])
                    offset += piece.length
                elif piece.kind == "und":
                    parts.append(und[piece.image][sample].to(text_emb.dtype))
                else:
                    parts.append(vq_emb[piece.image][sample].to(text_emb.dtype))
            sequences.append(torch.cat(parts))
        lengths = torch.tensor([s.shape[0] for s in sequences], device=self.device)
        longest = int(lengths.max())
        pad = longest - lengths
        embeds = text_emb.new_zeros(len(sequences), longest, text_emb.shape[-1])
        positions = torch.arange(longest, device=self.device).expand(len(sequences), -1)
        if pad_left:
            for i, seq in enumerate(sequences):
                embeds[i, longest - seq.shape[0] :] = seq
            mask = (positions >= pad[:, None]).long()
            position_ids = (positions - pad[:, None]).clamp(min=0)
        else:
            for i, seq in enumerate(sequences):
                embeds[i, : seq.shape[0]] = seq
            mask = (positions < lengths[:, None]).long()
            position_ids = positions
        return Embedded(embeds, mask, position_ids.contiguous())

    def _lm(self, batch: Embedded, **kwargs):
        return self.janus.model.language_model(
            inputs_embeds=batch.inputs_embeds,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
            **kwargs,
        )

    def _image_banks(
        self,
        current: dict[str, torch.Tensor],
        following: dict[str, torch.Tensor] | None,
        known_ids: dict[ImageRef, torch.Tensor] | None = None,
    ) -> tuple[dict[ImageRef, torch.Tensor], dict[ImageRef, torch.Tensor]]:
        """Understanding features and VQ ids of every current view (and of the targets, when given).
        ``known_ids`` are VQ ids computed earlier by the same frozen tokenizer (skips encoding)."""
        views = self.config.view_names
        batch = current[views[0]].shape[0]
        current = {v: self.to_model_size(current[v]) for v in views}
        und_all = self.und_features(torch.cat([current[v] for v in views])).split(batch)
        und = {ImageRef(v, CURRENT): f for v, f in zip(views, und_all)}
        wanted = [ImageRef(v, CURRENT) for v in views] if self.config.vq_context else []
        if following is not None:
            wanted += [ImageRef(v, NEXT) for v in views]
        vq = {ref: ids.to(self.device) for ref, ids in (known_ids or {}).items() if ref in wanted}
        missing = [ref for ref in wanted if ref not in vq]
        if missing:
            images = torch.cat([(current if r.time == CURRENT else following)[r.view] for r in missing])
            vq.update(zip(missing, self.vq_encode(self.to_model_size(images)).split(batch)))
        return und, vq

    def _dynamics_rows(self, action_texts: Sequence[str]) -> list[list[tuple[int, SequenceSpec]]]:
        """Per stage, the (sample, spec) pairs of the whole batch."""
        per_sample = [
            dynamics_stages(self.config.prompts, self.config.view_names, t, self.config.ivd, self.config.vq_context)
            for t in action_texts
        ]
        return [[(b, spec) for b, stages in enumerate(per_sample) for spec in stages[s]] for s in range(len(per_sample[0]))]

    # -- training losses ----------------------------------------------------------------------------------
    def target_logits(
        self,
        current: dict[str, torch.Tensor],
        following: dict[str, torch.Tensor],
        action_texts: Sequence[str],
        known_ids: dict[ImageRef, torch.Tensor] | None = None,
    ) -> tuple[list[tuple[int, RenderedSequence]], torch.Tensor, torch.Tensor]:
        """Teacher-forced image-token logits of every generated view: (rows, logits (R, n, K), labels (R, n))."""
        und, vq = self._image_banks(current, following, known_ids)
        rows = [(b, self.render(spec, include_target=True)) for stage in self._dynamics_rows(action_texts) for b, spec in stage]
        batch = self.embed(rows, und, vq, pad_left=False)
        hidden = self._lm(batch, use_cache=False).last_hidden_state
        starts = torch.tensor([r.span("target", r.spec.target)[0] for _, r in rows], device=self.device)
        index = (starts - 1)[:, None] + torch.arange(self.n_vq, device=self.device)  # predictor positions
        picked = hidden.gather(1, index[..., None].expand(-1, -1, hidden.shape[-1]))
        logits = self.janus.model.generation_head(picked).float()
        labels = torch.stack([vq[r.spec.target][b] for b, r in rows])
        return rows, logits, labels

    def dynamics_loss(
        self,
        current: dict[str, torch.Tensor],
        following: dict[str, torch.Tensor],
        action_texts: Sequence[str],
        known_ids: dict[ImageRef, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Mean cross-entropy of every target image token (teacher forcing, all views, all stages)."""
        _, logits, labels = self.target_logits(current, following, action_texts, known_ids)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))

    def answer_logits(self, head_images: torch.Tensor, instructions: Sequence[str]) -> torch.Tensor:
        """Next-token logits (B, vocab) after the question "is the task done?" about each head image."""
        head = self.config.view_names[0]
        und = {ImageRef(head, CURRENT): self.und_features(head_images)}
        rows = [(b, self.render(reward_question(self.config.prompts, head, text), False)) for b, text in enumerate(instructions)]
        batch = self.embed(rows, und, {}, pad_left=True)
        hidden = self._lm(batch, use_cache=False).last_hidden_state[:, -1]
        return self.janus.lm_head(hidden).float()

    def answer_loss(self, head_images: torch.Tensor, instructions: Sequence[str], success: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the answer token ("Yes" on success, else "No") over the whole vocabulary."""
        logits = self.answer_logits(head_images, instructions)
        target = torch.where(success.to(self.device).bool(), self.yes_id, self.no_id)
        return F.cross_entropy(logits, target)

    def forward(self, dynamics: dict | None = None, reward: dict | None = None) -> dict[str, torch.Tensor]:
        """Losses of one training batch; either part may be missing."""
        losses = {}
        if dynamics is not None:
            known = {ImageRef(v, CURRENT): ids for v, ids in dynamics.get("current_tokens", {}).items()}
            known.update({ImageRef(v, NEXT): ids for v, ids in dynamics.get("next_tokens", {}).items()})
            losses["image"] = self.dynamics_loss(dynamics["current"], dynamics["next"], dynamics["action_text"], known)
        if reward is not None:
            losses["answer"] = self.answer_loss(reward["image"], reward["instruction"], reward["success"])
        return losses

    # -- inference ------------------------------------------------------------------------------------------
    def _pick(self, logits: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if self.config.temperature == 0:
            return logits.argmax(-1)
        logits = logits.float() / self.config.temperature
        if self.config.top_k:
            kth = logits.topk(min(self.config.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)

    @torch.no_grad()
    def generate_image_tokens(self, batch: Embedded, generator: torch.Generator | None = None) -> torch.Tensor:
        """Autoregressive VQ tokens for every row at once, reusing the KV cache: (R, n_vq)."""
        out = self._lm(batch, use_cache=True)
        cache, hidden = out.past_key_values, out.last_hidden_state[:, -1]
        mask, position = batch.attention_mask, batch.position_ids[:, -1:]
        tokens = torch.empty(mask.shape[0], self.n_vq, dtype=torch.long, device=self.device)
        for i in range(self.n_vq):
            tokens[:, i] = self._pick(self.janus.model.generation_head(hidden), generator)
            if i + 1 == self.n_vq:
                break
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
            position = position + 1
            out = self.janus.model.language_model(
                inputs_embeds=self.janus.prepare_embeddings_for_image_generation(tokens[:, i : i + 1]),
                attention_mask=mask,
                position_ids=position,
                past_key_values=cache,
                use_cache=True,
            )
            cache, hidden = out.past_key_values, out.last_hidden_state[:, -1]
        return tokens

    @torch.no_grad()
    def predict_tokens(
        self, current: dict[str, torch.Tensor], action_texts: Sequence[str], generator: torch.Generator | None = None
    ) -> tuple[dict[str, torch.Tensor], list[list[tuple[int, RenderedSequence]]]]:
        """VQ ids of every view at t+k, stage by stage; also returns the rendered stage inputs."""
        und, vq = self._image_banks(current, None)
        batch = len(action_texts)
        stage_rows = []
        for stage in self._dynamics_rows(action_texts):
            rows = [(b, self.render(spec, include_target=False)) for b, spec in stage]
            tokens = self.generate_image_tokens(self.embed(rows, und, vq, pad_left=True), generator)
            for (b, rendered), ids in zip(rows, tokens):
                target = rendered.spec.target
                vq.setdefault(target, torch.zeros(batch, self.n_vq, dtype=torch.long, device=self.device))[b] = ids
            stage_rows.append(rows)
        return {v: vq[ImageRef(v, NEXT)] for v in self.config.view_names}, stage_rows


def _resize_uint8(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(images.shape[1:3]) == tuple(size):
        return images
    x = images.permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


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
        return self

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
        tokens, _ = self.core.predict_tokens(current, texts, self._rng())
        return {v: self.core.vq_decode(t) for v, t in tokens.items()}

    @torch.no_grad()
    def reward_from_tensor(self, head_images: torch.Tensor, instructions: Sequence[str]) -> np.ndarray:
        self.core.eval()
        logits = self.core.answer_logits(head_images, list(instructions))
        yes = logits[:, self.core.yes_id] > logits[:, self.core.no_id]
        return yes.float().cpu().numpy().astype(np.float32)

    def reward(self, head_images: np.ndarray, instructions: Sequence[str]) -> np.ndarray:
        """(B,) float32: 1 where the model answers Yes to "is the task done?" on the head image."""
        images = np.asarray(head_images)
        if images.ndim != 4 or len(instructions) != images.shape[0]:
            raise ValueError("reward needs (B,H,W,3) images and B instructions")
        return self.reward_from_tensor(torch.from_numpy(np.ascontiguousarray(images)), instructions)

    def predict(self, views: dict[str, np.ndarray], chunks: np.ndarray) -> dict[str, np.ndarray]:
        """Views k steps later (frame skipping), at the input size: name -> (B,H,W,3) uint8."""
        predicted = self.predict_model_size(views, chunks)
        return {v: _resize_uint8(predicted[v], views[v].shape[1:3]).cpu().numpy() for v in self.view_names}

    def step(
        self, views: dict[str, np.ndarray], chunks: np.ndarray, instructions: list[str]
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """One imagined chunk for B branches: next views (input size, uint8) and reward (B,) in {0, 1}."""
        if len(instructions) != np.shape(chunks)[0]:
            raise ValueError(f"{len(instructions)} instructions for {np.shape(chunks)[0]} chunks")
        predicted = self.predict_model_size(views, chunks)
        reward = self.reward_from_tensor(predicted[self.view_names[0]], instructions)
        next_views = {v: _resize_uint8(predicted[v], views[v].shape[1:3]).cpu().numpy() for v in self.view_names}
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
            arch, len(tokenizer), tokenizer.convert_tokens_to_ids(_IMAGE_TOKENS["image_token"]), tokenizer.pad_token_id
        )
        torch.manual_seed(seed)
        janus = JanusForConditionalGeneration(janus_config).eval()
        image_processor = JanusImageProcessor(
            size={"height": arch.image_size, "width": arch.image_size}, image_mean=[0.5] * 3, image_std=[0.5] * 3
        )
        core = UMMCore(janus, tokenizer, image_processor, config)
        return cls(core, ActionCodec(action_stats, config.n_bins), seed=seed)
