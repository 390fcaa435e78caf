"""The Janus model as world model: ``UMMCore`` turns world-model sequences (``sequence.py``) into LLM
inputs, losses and generated image tokens.

``JanusForConditionalGeneration`` holds a SigLIP-style understanding encoder (+ aligner), a VQ image
tokenizer with its generation embeddings/head, and a Llama LLM. The world model uses the parts directly:
current views enter as understanding features and as VQ tokens, the action chunk as text, and the next
views are generated as VQ tokens (batched, KV cache), then decoded by the VQ decoder. The reward is the
model's Yes/No answer about the head view.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from transformers import JanusForConditionalGeneration, StaticCache

from vla_mbpo_ros.core.util.images import resize_float, resize_uint8
from vla_mbpo_ros.core.world_model.configuration import IMAGE_TOKENS, WorldModelConfig
from vla_mbpo_ros.core.world_model.sequence import (
    CURRENT,
    NEXT,
    ImageRef,
    RenderedSequence,
    SequenceSpec,
    TokenIds,
    dynamics_stages,
    outcome_question,
    render,
    reward_question,
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
            boi=self._token_id(getattr(tokenizer, "boi_token", None) or IMAGE_TOKENS["boi_token"]),
            eoi=self._token_id(getattr(tokenizer, "eoi_token", None) or IMAGE_TOKENS["eoi_token"]),
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
        return resize_float(x, size).to(dtype)

    def to_model_size(self, images: torch.Tensor) -> torch.Tensor:
        """(N,H,W,3) uint8 on any device -> (N,S,S,3) uint8 on the model device (S = image size)."""
        return resize_uint8(images.to(self.device), (self.und_size, self.und_size))

    def und_features(self, images: torch.Tensor) -> torch.Tensor:
        """Understanding-encoder features projected to the LLM width: (N, n_und, D)."""
        vision = self.janus.model.vision_model
        dtype = vision.embeddings.patch_embedding.weight.dtype
        x = (self._pixels(images, self.und_size, torch.float32) - self.und_mean) / self.und_std
        trainable = any(p.requires_grad for p in vision.parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and trainable):
            hidden = vision(x.to(dtype)).last_hidden_state
        aligner = self.janus.model.aligner
        return aligner(hidden.to(next(aligner.parameters()).dtype))  # a bf16 frozen tower beside an fp32 aligner

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
        logits = self._with_copy_prior(logits, self._current_ids(rows, vq))
        labels = torch.stack([vq[r.spec.target][b] for b, r in rows])
        return rows, logits, labels

    def _current_ids(self, rows: Sequence[tuple[int, RenderedSequence]], vq: dict[ImageRef, torch.Tensor]) -> torch.Tensor | None:
        """(R, n_vq) VQ ids of each row's target view at time t (None without the copy prior)."""
        if not self.config.copy_prior:
            return None
        return torch.stack([vq[ImageRef(r.spec.target.view, CURRENT)][b] for b, r in rows])

    def _with_copy_prior(self, logits: torch.Tensor, current: torch.Tensor | None) -> torch.Tensor:
        """Add ``copy_prior`` to the logit of the token the same position holds now: most of a scene does not
        move in one chunk, so the model only has to learn where it changes (a residual for tokens)."""
        if current is None:
            return logits
        bonus = F.one_hot(current, logits.shape[-1]).to(logits.dtype) * self.config.copy_prior
        return logits + bonus

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

    def outcome_logits(
        self,
        current: dict[str, torch.Tensor],
        action_texts: Sequence[str],
        instructions: Sequence[str],
        known_ids: dict[ImageRef, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Next-token logits (B, vocab) after "will the task be done after these actions?" about each
        sample's current views and action chunk (``reward_from: transition``)."""
        und, vq = self._image_banks(current, None, known_ids)
        prompts, views = self.config.prompts, self.config.view_names
        rows = [(b, self.render(outcome_question(prompts, views, action, text, self.config.vq_context), False))
                for b, (action, text) in enumerate(zip(action_texts, instructions))]
        batch = self.embed(rows, und, vq, pad_left=True)
        hidden = self._lm(batch, use_cache=False).last_hidden_state[:, -1]
        return self.janus.lm_head(hidden).float()

    def answer_loss(self, reward: dict) -> torch.Tensor:
        """Cross-entropy of the answer token ("Yes" on success, else "No") over the whole vocabulary, about a
        head image (``image``) or a transition (``current`` views and ``action_text``)."""
        if "current" in reward:
            logits = self.outcome_logits(reward["current"], reward["action_text"], reward["instruction"])
        else:
            logits = self.answer_logits(reward["image"], reward["instruction"])
        target = torch.where(reward["success"].to(self.device).bool(), self.yes_id, self.no_id)
        return F.cross_entropy(logits, target)

    def yes_probability(self, logits: torch.Tensor) -> torch.Tensor:
        """(B,) P(Yes | Yes or No) from answer logits."""
        return torch.stack([logits[:, self.yes_id], logits[:, self.no_id]], dim=-1).softmax(-1)[:, 0]

    def forward(self, dynamics: dict | None = None, reward: dict | None = None) -> dict[str, torch.Tensor]:
        """Losses of one training batch; either part may be missing."""
        losses = {}
        if dynamics is not None:
            known = {ImageRef(v, CURRENT): ids for v, ids in dynamics.get("current_tokens", {}).items()}
            known.update({ImageRef(v, NEXT): ids for v, ids in dynamics.get("next_tokens", {}).items()})
            losses["image"] = self.dynamics_loss(dynamics["current"], dynamics["next"], dynamics["action_text"], known)
        if reward is not None:
            losses["answer"] = self.answer_loss(reward)
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
    def generate_image_tokens(self, batch: Embedded, generator: torch.Generator | None = None,
                              current: torch.Tensor | None = None) -> torch.Tensor:
        """Autoregressive VQ tokens for every row at once, reusing the KV cache: (R, n_vq). ``current``: the
        rows' target views at time t (VQ ids) for the copy prior.

        The KV cache is a ``StaticCache`` of exactly prompt + n_vq - 1 positions, allocated once and written
        in place (a ``DynamicCache`` concatenates, i.e. copies every layer's cache at every token); the
        attention mask is preallocated at full length for the same reason."""
        rows, prompt = batch.attention_mask.shape
        # One dtype for every input, the one the matmuls run in (bf16 under autocast): the cache takes the
        # dtype of its first keys, and fp32 embeddings (fp32 master weights) would make them fp32 (twice the
        # memory) while later values come out of autocast in bf16.
        device_type = self.device.type
        dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else \
            self.janus.lm_head.weight.dtype
        batch = Embedded(batch.inputs_embeds.to(dtype), batch.attention_mask, batch.position_ids)
        cache = StaticCache(config=self.janus.config.text_config, max_cache_len=prompt + self.n_vq - 1)
        out = self._lm(batch, use_cache=True, past_key_values=cache)
        hidden = out.last_hidden_state[:, -1]
        full_mask = torch.ones(rows, prompt + self.n_vq - 1, dtype=batch.attention_mask.dtype, device=self.device)
        full_mask[:, :prompt] = batch.attention_mask
        position = batch.position_ids[:, -1:]
        tokens = torch.empty(rows, self.n_vq, dtype=torch.long, device=self.device)
        for i in range(self.n_vq):
            logits = self.janus.model.generation_head(hidden).float()
            if current is not None:
                logits = self._with_copy_prior(logits, current[:, i])
            tokens[:, i] = self._pick(logits, generator)
            if i + 1 == self.n_vq:
                break
            position = position + 1
            out = self.janus.model.language_model(
                inputs_embeds=self.janus.prepare_embeddings_for_image_generation(tokens[:, i : i + 1]).to(dtype),
                attention_mask=full_mask[:, : prompt + i + 1],
                position_ids=position,
                past_key_values=cache,
                cache_position=torch.tensor([prompt + i], device=self.device),
                use_cache=True,
            )
            hidden = out.last_hidden_state[:, -1]
        return tokens

    @torch.no_grad()
    def predict_tokens(
        self,
        current: dict[str, torch.Tensor],
        action_texts: Sequence[str],
        generator: torch.Generator | None = None,
        known_ids: dict[ImageRef, torch.Tensor] | None = None,
    ) -> tuple[dict[str, torch.Tensor], list[list[tuple[int, RenderedSequence]]]]:
        """VQ ids of every view at t+k, stage by stage; also returns the rendered stage inputs.
        ``known_ids``: VQ ids of current views known already (e.g. generated by the previous step)."""
        und, vq = self._image_banks(current, None, known_ids)
        batch = len(action_texts)
        stage_rows = []
        for stage in self._dynamics_rows(action_texts):
            rows = [(b, self.render(spec, include_target=False)) for b, spec in stage]
            tokens = self.generate_image_tokens(self.embed(rows, und, vq, pad_left=True), generator,
                                                self._current_ids(rows, vq))
            for (b, rendered), ids in zip(rows, tokens):
                target = rendered.spec.target
                vq.setdefault(target, torch.zeros(batch, self.n_vq, dtype=torch.long, device=self.device))[b] = ids
            stage_rows.append(rows)
        return {v: vq[ImageRef(v, NEXT)] for v in self.config.view_names}, stage_rows
