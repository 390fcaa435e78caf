"""Peak GPU memory of each phase of an iteration, estimated from shapes before anything loads.

    python -m vla_mbpo_ros.plan --config config/finetune_gpu.yaml --gpu-gb 80

The loop runs its phases one after the other on one device, so each phase has its own peak:

  bc           the policy being behaviour-cloned: weights, gradients, AdamW states, activations
  world_model  the UMM being finetuned: the same four terms at the world-model batch
  imagination  the UMM (inference weights) + its KV cache for one stage of interleaved view decoding at
               the rollout batch, beside the policy that PPO keeps resident (weights + AdamW states) and
               its prefix KV cache at the rollout batch
  ppo          the same residents + the activations of one PPO minibatch (prefix pass without gradient,
               one denoising step of the action expert with gradient)

Bytes per parameter (``precision="bf16_fp32_master"``: bf16 autocast, fp32 master weights):
trainable = 4 (fp32 weight) + 4 (fp32 gradient) + 8 (AdamW m, v) + 2 (autocast's bf16 copy, cached for the
forward) = 18; frozen = 2 (bf16); inference-only = 2. ``"fp32"``: trainable 16, frozen 4.

Activations are the tensors autograd keeps for backward, per transformer layer and token, for a
Llama/Gemma-style block under bf16 autocast (fp32 residual stream): per RMSNorm its fp32 input, the
normalised fp32 tensor and the product's input, 2 x 12h bytes, the
normed inputs of the attention and MLP 2 x 2h, q/k/v, attention output and o_proj input 2(2q + 2kv),
MLP gate/up/activation/product 4 x 2i, and with eager attention the fp32 softmax output plus its bf16
copy, heads x context x 6 bytes. Gradient checkpointing keeps each layer's input (4h) and one layer's
activations during its recomputation. Every figure here is an ESTIMATE: it is checked against peaks
measured on the CPU at toy sizes (test/core/test_memory_plan.py); real sizes on a GPU are not measured.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

GIB = 2**30
ACT = 2  # bytes of a bf16 activation
PHASES = ("bc", "world_model", "imagination", "ppo")
PRECISIONS = ("bf16_fp32_master", "fp32")
# Workspace the estimate does not model per op (cuBLAS/attention workspaces, allocator fragmentation).
OVERHEAD_FRACTION = 0.10


@dataclass(frozen=True)
class Decoder:
    """A Llama/Gemma-style decoder stack."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int = 0  # input embedding rows (0: none, e.g. an action expert)
    lm_head: bool = False  # an untied output projection of vocab x hidden

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def parameters(self) -> int:
        attention = self.hidden * (self.q_dim + 2 * self.kv_dim) + self.q_dim * self.hidden
        layer = attention + 3 * self.hidden * self.intermediate + 2 * self.hidden
        return self.layers * layer + self.hidden + self.vocab * self.hidden * (2 if self.lm_head else 1)

    def kv_bytes_per_token(self, dtype_bytes: int = ACT) -> int:
        return 2 * self.layers * self.kv_dim * dtype_bytes

    def linear_bytes_per_token_layer(self) -> int:
        """What one layer keeps for backward per token that passes its (trainable) projections."""
        h, q, kv, i = self.hidden, self.q_dim, self.kv_dim, self.intermediate
        # Each RMSNorm keeps its fp32 input, the normalised fp32 tensor and its product input: 3 x 4h.
        return 2 * 12 * h + ACT * (2 * h + 2 * q + 2 * kv + 4 * i)

    def attention_bytes_per_token_layer(self, context: int, eager: bool) -> int:
        """Attention tensors kept per query token: q/k/v/output (and the softmax matrix when eager)."""
        return ACT * (2 * self.q_dim + 2 * self.kv_dim) + (self.heads * context * 6 if eager else 0)


@dataclass(frozen=True)
class ViT:
    """A SigLIP-style vision tower (patch embedding, pre-norm blocks with a GELU MLP)."""

    layers: int
    hidden: int
    intermediate: int
    image_size: int
    patch: int
    heads: int

    @property
    def tokens(self) -> int:
        return (self.image_size // self.patch) ** 2

    def parameters(self) -> int:
        h, i = self.hidden, self.intermediate
        layer = 4 * h * h + 4 * h + 2 * h * i + i + h + 4 * h
        return self.layers * layer + 3 * self.patch**2 * h + h + self.tokens * h + 2 * h

    def bytes_per_token_layer(self) -> int:
        h, i = self.hidden, self.intermediate
        return 2 * 4 * h + ACT * (2 * h + 4 * h + h + 2 * i)


@dataclass(frozen=True)
class PolicyShape:
    """A flow-matching VLA: vision tower -> VLM prefix, action expert over the action chunk."""

    backend: str
    vision: ViT
    vlm: Decoder
    expert: Decoder
    image_tokens: int  # prefix tokens per view (after any pixel shuffle)
    text_tokens: int  # language (+ state) tokens of the prefix
    chunk: int  # actions the model denoises (suffix tokens)
    extra_parameters: int = 0  # trained with the expert: action/state/time projections, adaptive norms
    vlm_extra_parameters: int = 0  # part of the VLM: the vision-to-text projector / connector
    unused_parameters: int = 0  # built but never in the loss (pi0.5's expert lm_head): frozen
    eager: bool = True  # LeRobot's pi0/pi0.5/SmolVLA attention is eager (scores materialised)

    def prefix_tokens(self, views: int) -> int:
        return views * self.image_tokens + self.text_tokens

    def parameters(self) -> dict[str, int]:
        return {"vision": self.vision.parameters(), "vlm": self.vlm.parameters() + self.vlm_extra_parameters,
                "expert": self.expert.parameters() + self.extra_parameters, "unused": self.unused_parameters}


@dataclass(frozen=True)
class WorldModelShape:
    """A Janus-style UMM: SigLIP understanding tower, VQ tokenizer, Llama LLM, generation head."""

    vision: ViT
    llm: Decoder
    vq_parameters: int
    generation_parameters: int  # generation embeddings, aligners, generation head
    codebook: int
    image_tokens: int  # VQ tokens per view (= understanding tokens for Janus at 384 px / 16)

    def parameters(self) -> dict[str, int]:
        return {"vision": self.vision.parameters(), "llm": self.llm.parameters(), "vq": self.vq_parameters,
                "generation": self.generation_parameters}


# ------------------------------------------------------------------------------------------ known shapes
# PaliGemma's Gemma 2B as LeRobot builds it: input embedding and an untied lm_head of 257152 rows.
GEMMA_2B = Decoder(layers=18, hidden=2048, intermediate=16384, heads=8, kv_heads=1, head_dim=256, vocab=257152,
                   lm_head=True)
GEMMA_300M = Decoder(layers=18, hidden=1024, intermediate=4096, heads=8, kv_heads=1, head_dim=256)
SIGLIP_SO400M_224 = ViT(layers=27, hidden=1152, intermediate=4304, image_size=224, patch=14, heads=16)
# SmolVLA: SmolVLM2-500M's first 16 of 32 text layers, its SigLIP at 512 px (64 tokens after the pixel
# shuffle of 4), an expert at 0.75 width whose MLP LeRobot rounds to a multiple of 256.
SMOLVLM_TEXT_16 = Decoder(layers=16, hidden=960, intermediate=2560, heads=15, kv_heads=5, head_dim=64, vocab=49280,
                          lm_head=True)
SMOLVLA_EXPERT = Decoder(layers=16, hidden=720, intermediate=2048, heads=15, kv_heads=5, head_dim=64)
SIGLIP_B16_512 = ViT(layers=12, hidden=768, intermediate=3072, image_size=512, patch=16, heads=12)

POLICY_SHAPES = {
    # pi0.5: adaRMS norms (a 1024 -> 3 x 1024 projection per norm, 2 per layer + the final one) in the expert.
    "pi05": PolicyShape("pi05", SIGLIP_SO400M_224, GEMMA_2B, GEMMA_300M, image_tokens=256, text_tokens=200, chunk=50,
                        extra_parameters=2 * (32 * 1024 + 1024) + 2 * (1024 * 1024 + 1024)
                        + 37 * (1024 * 3072 + 3072) - 37 * 1024, vlm_extra_parameters=1152 * 2048 + 2048,
                        unused_parameters=257152 * 1024),
    "pi0": PolicyShape("pi0", SIGLIP_SO400M_224, GEMMA_2B, GEMMA_300M, image_tokens=256, text_tokens=48 + 1, chunk=50,
                       extra_parameters=3 * (32 * 1024 + 1024) + 2 * 2048 * 1024 + 1024 * 1024,
                       vlm_extra_parameters=1152 * 2048 + 2048, unused_parameters=257152 * 1024),
    "smolvla": PolicyShape("smolvla", SIGLIP_B16_512, SMOLVLM_TEXT_16, SMOLVLA_EXPERT, image_tokens=64,
                           text_tokens=48 + 1, chunk=50,
                           extra_parameters=3 * 32 * 720 + 2 * 720 * 720, vlm_extra_parameters=768 * 16 * 960),
}

JANUS_PRO_1B = WorldModelShape(
    vision=ViT(layers=24, hidden=1024, intermediate=4096, image_size=384, patch=16, heads=16),
    llm=Decoder(layers=24, hidden=2048, intermediate=5632, heads=16, kv_heads=16, head_dim=128, vocab=102400, lm_head=True),
    vq_parameters=71_500_000, generation_parameters=16384 * 8 + 8 * 2048 + 2048 * 2048 + 2 * 2048 * 2048 + 2048 * 16384
    + 1024 * 2048 + 2048 * 2048, codebook=16384, image_tokens=576)
JANUS_PRO_7B = WorldModelShape(
    vision=JANUS_PRO_1B.vision,
    llm=Decoder(layers=30, hidden=4096, intermediate=11008, heads=32, kv_heads=32, head_dim=128, vocab=102400, lm_head=True),
    vq_parameters=71_500_000, generation_parameters=16384 * 8 + 8 * 4096 + 4096 * 4096 + 2 * 4096 * 4096 + 4096 * 16384
    + 1024 * 4096 + 4096 * 4096, codebook=16384, image_tokens=576)


def janus_shape_from_config(config: dict[str, Any]) -> WorldModelShape:
    """The shape of a Janus ``config.json`` (transformers' JanusConfig layout)."""
    text, vision, vq = config.get("text_config", {}), config.get("vision_config", {}), config.get("vq_config", {})
    hidden = int(text["hidden_size"])
    heads = int(text["num_attention_heads"])
    llm = Decoder(layers=int(text["num_hidden_layers"]), hidden=hidden, intermediate=int(text["intermediate_size"]),
                  heads=heads, kv_heads=int(text.get("num_key_value_heads") or heads),
                  head_dim=int(text.get("head_dim") or hidden // heads), vocab=int(text["vocab_size"]),
                  lm_head=not bool(config.get("tie_word_embeddings", False)))
    vh = int(vision.get("hidden_size", 1024))
    tower = ViT(layers=int(vision.get("num_hidden_layers", 24)), hidden=vh,
                intermediate=int(vh * float(vision.get("mlp_ratio", 4.0))), image_size=int(vision.get("image_size", 384)),
                patch=int(vision.get("patch_size", 16)), heads=int(vision.get("num_attention_heads", 16)))
    codebook, embed = int(vq.get("num_embeddings", 16384)), int(vq.get("embed_dim", 8))
    multipliers = vq.get("channel_multiplier", [1, 1, 2, 2, 4])
    base = int(vq.get("base_channels", 128))
    # Encoder + decoder of res-blocks of 3x3 convolutions; within a few % of transformers' JanusVQVAE.
    vq_params = sum(2 * int(vq.get("num_res_blocks", 2)) * 2 * 9 * (base * m) ** 2 for m in multipliers) * 2
    generation = (codebook * embed + embed * hidden + hidden * hidden + 2 * hidden * hidden + hidden * codebook
                  + vh * hidden + hidden * hidden)
    grid = int(vision.get("num_image_tokens", 0)) or tower.tokens
    return WorldModelShape(tower, llm, vq_params, generation, codebook, grid)


# ------------------------------------------------------------------------------------------ the plan
@dataclass(frozen=True)
class Term:
    name: str
    bytes: float

    @property
    def gib(self) -> float:
        return self.bytes / GIB


@dataclass
class PhasePlan:
    phase: str
    terms: list[Term]

    @property
    def bytes(self) -> float:
        subtotal = sum(t.bytes for t in self.terms)
        return subtotal * (1.0 + OVERHEAD_FRACTION)

    @property
    def gib(self) -> float:
        return self.bytes / GIB


@dataclass
class MemoryPlan:
    phases: list[PhasePlan]
    gpu_gib: float = 0.0  # 0: nothing to check against

    def phase(self, name: str) -> PhasePlan:
        return next(p for p in self.phases if p.phase == name)

    def overflow(self) -> tuple[str, float] | None:
        """(phase, GiB over) of the phase that overshoots the GPU most; None when all fit."""
        if self.gpu_gib <= 0:
            return None
        worst = max(self.phases, key=lambda p: p.gib)
        return (worst.phase, worst.gib - self.gpu_gib) if worst.gib > self.gpu_gib else None

    def refusal(self) -> str | None:
        """One line saying which phase does not fit and by how much, or None."""
        over = self.overflow()
        if over is None:
            return None
        phase = self.phase(over[0])
        top = max(phase.terms, key=lambda t: t.bytes)
        return (f"memory plan: phase {over[0]} needs ~{phase.gib:.1f} GiB, {over[1]:.1f} GiB more than the "
                f"{self.gpu_gib:g} GiB GPU (largest term: {top.name} {top.gib:.1f} GiB); estimate, see "
                "`python -m vla_mbpo_ros.plan`")

    def table(self) -> str:
        lines = []
        for phase in self.phases:
            fits = "" if self.gpu_gib <= 0 else ("  fits" if phase.gib <= self.gpu_gib else "  DOES NOT FIT")
            lines.append(f"{phase.phase:<12} peak ~{phase.gib:6.1f} GiB{fits}")
            for term in phase.terms:
                lines.append(f"    {term.name:<44} {term.gib:7.2f} GiB")
            lines.append(f"    {'+ workspace/fragmentation ' + format(OVERHEAD_FRACTION, '.0%'):<44} "
                         f"{phase.gib - sum(t.gib for t in phase.terms):7.2f} GiB")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"gpu_gib": self.gpu_gib, "estimate": True,
                "phases": {p.phase: {"gib": p.gib, "terms": {t.name: t.gib for t in p.terms}} for p in self.phases}}


@dataclass
class PlanInputs:
    """What the plan reads from a pipeline config (every count a config value, see ``from_pipeline``)."""

    policy: PolicyShape
    world_model: WorldModelShape
    views: int
    action_text_tokens: int  # tokens of the action chunk as text ("Step i: [...]" x k)
    prompt_tokens: int  # every other text token of one dynamics sequence (prompts, labels)
    precision: str = "bf16_fp32_master"
    policy_checkpointing: bool = True
    wm_checkpointing: bool = True
    wm_train_llm_layers: int = 0  # 0: every LLM layer trains
    bc_batch: int = 32
    bc_train_vlm: bool = False
    bc_train_vision: bool = False
    rl_train_vlm: bool = False
    wm_batch: int = 8
    wm_reward_batch: int = 8
    wm_freeze_vision: bool = True
    rollout_batch: int = 64
    ppo_minibatch: int = 512
    ivd: bool = True
    vq_context: bool = True
    static_kv_cache: bool = True  # False: DynamicCache, whose torch.cat copies one layer's cache per token
    value_head_parameters: int = 1024 * 1024

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision: expected one of {PRECISIONS}, got {self.precision!r}")


def _per_param(precision: str) -> tuple[int, int]:
    """(bytes per trainable parameter, bytes per frozen parameter)."""
    return (18, 2) if precision == "bf16_fp32_master" else (16, 4)


def _decoder_training(model: Decoder, rows: int, tokens: int, trainable_tokens: int, context: int, eager: bool,
                      checkpointing: bool) -> tuple[float, float]:
    """(kept activations, recomputation peak) in bytes of a decoder stack trained on ``rows`` sequences of
    ``tokens``, of which ``trainable_tokens`` pass trainable projections; every token's attention is kept
    (a concatenated query that needs grad keeps all of it)."""
    per_layer = rows * (tokens * model.attention_bytes_per_token_layer(context, eager)
                        + trainable_tokens * model.linear_bytes_per_token_layer())
    if checkpointing:
        return model.layers * rows * tokens * 4 * model.hidden, per_layer
    return model.layers * per_layer, 0.0


def _vision_training(tower: ViT, images: int, checkpointing: bool) -> float:
    per_layer = images * tower.tokens * tower.bytes_per_token_layer()
    return (tower.layers * images * tower.tokens * 4 * tower.hidden + per_layer) if checkpointing \
        else tower.layers * per_layer


def _inference_transient(model: Decoder, rows: int, tokens: int, eager: bool) -> float:
    """Largest temporaries of one layer of a forward without gradient (MLP intermediates, eager scores)."""
    mlp = rows * tokens * model.intermediate * ACT * 3
    scores = rows * model.heads * tokens * tokens * 6 if eager else 0
    return max(mlp, scores)


def dynamics_lengths(inputs: PlanInputs) -> list[tuple[int, int]]:
    """(rows per sample, tokens per row) of each IVD stage of one dynamics sample, target included."""
    n_img = inputs.world_model.image_tokens
    framed = n_img + 2  # begin/end-of-image tokens
    per_view_context = framed * (2 if inputs.vq_context else 1)
    head = inputs.views * per_view_context + inputs.action_text_tokens + inputs.prompt_tokens + framed
    if not inputs.ivd:
        return [(inputs.views, head)]
    stages = [(1, head)]
    if inputs.views > 1:
        stages.append((inputs.views - 1, per_view_context + framed + inputs.prompt_tokens + framed))
    return stages


def plan_bc(inputs: PlanInputs) -> PhasePlan:
    p = inputs.policy
    trainable_b, frozen_b = _per_param(inputs.precision)
    params = p.parameters()
    trainable = params["expert"] + (params["vlm"] if inputs.bc_train_vlm else 0) \
        + (params["vision"] if inputs.bc_train_vision else 0)  # "unused" stays frozen
    frozen = sum(params.values()) - trainable
    prefix = p.prefix_tokens(inputs.views)
    total = prefix + p.chunk
    b = inputs.bc_batch
    vlm_kept, vlm_peak = _decoder_training(p.vlm, b, prefix, prefix if inputs.bc_train_vlm else 0, total, p.eager,
                                           inputs.policy_checkpointing)
    exp_kept, exp_peak = _decoder_training(p.expert, b, p.chunk, p.chunk, total, p.eager, inputs.policy_checkpointing)
    terms = [Term(f"weights+grads+AdamW trainable {trainable / 1e9:.2f} B", trainable * trainable_b),
             Term(f"weights frozen {frozen / 1e9:.2f} B", frozen * frozen_b),
             Term(f"activations VLM+expert (batch {b}, {total} tok)", vlm_kept + exp_kept + max(vlm_peak, exp_peak))]
    if inputs.bc_train_vision:
        terms.append(Term("activations vision tower", _vision_training(p.vision, b * inputs.views,
                                                                      inputs.policy_checkpointing)))
    else:
        terms.append(Term("vision forward (no grad)", b * inputs.views * p.vision.tokens * p.vision.intermediate * ACT * 2))
    return PhasePlan("bc", terms)


def plan_world_model(inputs: PlanInputs) -> PhasePlan:
    wm = inputs.world_model
    trainable_b, frozen_b = _per_param(inputs.precision)
    params = wm.parameters()
    frozen = params["vq"] + (params["vision"] if inputs.wm_freeze_vision else 0)
    llm = wm.llm
    if inputs.wm_train_llm_layers:
        if inputs.wm_train_llm_layers > llm.layers:
            raise ValueError(f"world_model.train.train_llm_layers {inputs.wm_train_llm_layers} > {llm.layers} layers")
        per_layer = (llm.parameters() - llm.hidden - llm.vocab * llm.hidden * (2 if llm.lm_head else 1)) // llm.layers
        frozen += (llm.layers - inputs.wm_train_llm_layers) * per_layer + llm.vocab * llm.hidden * (2 if llm.lm_head else 1)
    trainable = sum(params.values()) - frozen
    kept = peak = 0.0
    rows_total = 0
    for rows_per_sample, length in dynamics_lengths(inputs):
        rows = rows_per_sample * inputs.wm_batch
        rows_total += rows
        k, pk = _decoder_training(wm.llm, rows, length, length, length, False, inputs.wm_checkpointing)
        kept, peak = kept + k, max(peak, pk)
    # Image-token logits in fp32, their softmax for the CE and the bf16 head output.
    logits = rows_total * wm.image_tokens * wm.codebook * (4 + 4 + ACT)
    reward_len = wm.image_tokens + 2 + inputs.prompt_tokens
    rk, rp = _decoder_training(wm.llm, inputs.wm_reward_batch, reward_len, reward_len, reward_len, False,
                               inputs.wm_checkpointing)
    images = inputs.wm_batch * inputs.views * 2 + inputs.wm_reward_batch
    vision = _vision_training(wm.vision, images, inputs.wm_checkpointing) if not inputs.wm_freeze_vision \
        else images * wm.vision.tokens * wm.vision.intermediate * ACT * 2
    return PhasePlan("world_model", [
        Term(f"weights+grads+AdamW trainable {trainable / 1e9:.2f} B", trainable * trainable_b),
        Term(f"weights frozen {frozen / 1e9:.2f} B", frozen * frozen_b),
        Term(f"activations LLM (batch {inputs.wm_batch}, {rows_total} rows)", kept + rk + max(peak, rp)),
        Term("image-token logits + CE (fp32)", logits),
        Term("understanding tower", vision),
    ])


def _rl_residents(inputs: PlanInputs) -> list[Term]:
    """What stays on the GPU through imagination and PPO: the policy with its optimizer, the world model."""
    p = inputs.policy
    trainable_b, frozen_b = _per_param(inputs.precision)
    params = p.parameters()
    trainable = params["expert"] + (params["vlm"] if inputs.rl_train_vlm else 0) + inputs.value_head_parameters
    frozen = sum(params.values()) + inputs.value_head_parameters - trainable
    # AdamW states and masters persist between PPO steps; gradients are freed (zero_grad(set_to_none)).
    resident_trainable = trainable * (trainable_b - 4 - ACT)
    return [Term(f"policy trainable {trainable / 1e9:.2f} B (masters+AdamW)", resident_trainable),
            Term(f"policy frozen {frozen / 1e9:.2f} B", frozen * frozen_b),
            Term("world model weights (bf16)", sum(inputs.world_model.parameters().values()) * ACT)]


def plan_imagination(inputs: PlanInputs) -> PhasePlan:
    wm, p = inputs.world_model, inputs.policy
    b = inputs.rollout_batch
    stages = dynamics_lengths(inputs)
    kv_per_token = wm.llm.kv_bytes_per_token()
    kv = max(rows * b * length * kv_per_token for rows, length in stages)
    copy = 0.0 if inputs.static_kv_cache else max(rows * b * length * kv_per_token / wm.llm.layers for rows, length in stages)
    prefill = max(_inference_transient(wm.llm, rows * b, length - wm.image_tokens, False) for rows, length in stages)
    prefix = p.prefix_tokens(inputs.views)
    policy_kv = b * prefix * p.vlm.kv_bytes_per_token()
    policy_transient = _inference_transient(p.vlm, b, prefix, p.eager)
    return PhasePlan("imagination", _rl_residents(inputs) + [
        Term(f"world-model KV cache (B {b}, {max(l for _, l in stages)} tok)", kv + copy),
        Term("world-model prefill temporaries", prefill),
        Term(f"policy prefix KV cache (B {b}, {prefix} tok)", policy_kv),
        Term("policy prefix temporaries", policy_transient),
    ])


def plan_ppo(inputs: PlanInputs) -> PhasePlan:
    p = inputs.policy
    b = inputs.ppo_minibatch
    prefix = p.prefix_tokens(inputs.views)
    total = prefix + p.chunk
    params = p.parameters()
    trainable = params["expert"] + (params["vlm"] if inputs.rl_train_vlm else 0) + inputs.value_head_parameters
    grads = trainable * (4 + ACT)  # fp32 gradients + autocast's bf16 weight copies during the step
    policy_kv = b * prefix * p.vlm.kv_bytes_per_token()
    if inputs.rl_train_vlm:
        vk, vp = _decoder_training(p.vlm, b, prefix, prefix, total, p.eager, inputs.policy_checkpointing)
        prefix_term = Term("activations VLM prefix (with grad)", vk + vp)
    else:
        prefix_term = Term("prefix temporaries (no grad)", _inference_transient(p.vlm, b, prefix, p.eager))
    ek, ep = _decoder_training(p.expert, b, p.chunk, p.chunk, total, p.eager, inputs.policy_checkpointing)
    return PhasePlan("ppo", _rl_residents(inputs) + [
        Term("gradients (fp32) + autocast weight copies", grads),
        Term(f"policy prefix KV cache (B {b}, {prefix} tok)", policy_kv),
        prefix_term,
        Term("activations action expert (one denoising step)", ek + ep),
    ])


def make_plan(inputs: PlanInputs, gpu_gib: float = 0.0) -> MemoryPlan:
    return MemoryPlan([plan_bc(inputs), plan_world_model(inputs), plan_imagination(inputs), plan_ppo(inputs)],
                      gpu_gib)


# ------------------------------------------------------------------------------------------ from a config
def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def policy_shape(backend: str, pretrained: str = "") -> PolicyShape:
    """The backend's shape; chunk and text length from the LeRobot config.json of ``pretrained`` if there."""
    if backend not in POLICY_SHAPES:
        raise ValueError(f"policy.backend: the memory plan knows {sorted(POLICY_SHAPES)}, not {backend!r}")
    shape = POLICY_SHAPES[backend]
    config = _read_json(Path(pretrained).expanduser() / "config.json") if pretrained else None
    if config:
        shape = dataclasses.replace(shape, chunk=int(config.get("chunk_size", shape.chunk)),
                                    text_tokens=int(config.get("tokenizer_max_length", shape.text_tokens))
                                    + (1 if backend != "pi05" else 0))
    return shape


def world_model_shape(pretrained: str) -> WorldModelShape:
    """From the snapshot's config.json when it is there, else Janus-Pro-7B/-1B by name."""
    config = _read_json(Path(pretrained).expanduser() / "config.json") if pretrained else None
    if config and "text_config" in config:
        return janus_shape_from_config(config)
    return JANUS_PRO_7B if "7b" in pretrained.lower() else JANUS_PRO_1B


def action_text_tokens(chunk: int, action_dim: int) -> int:
    """Tokens of "Step i: [b1, ..., bd]" x chunk with integers 0..256: a Llama BPE splits digits one by one,
    so about 3 per integer + 2 for its separator, 6 for the step label (an upper estimate)."""
    return chunk * (6 + action_dim * 5)


def inputs_from_pipeline(config: Any, action_dim: int = 6) -> PlanInputs:
    """The plan's inputs from a ``PipelineConfig`` (``memory`` section: precision, checkpointing, selection)."""
    policy_setup, wm_setup, mbpo = config.policy, config.world_model, config.mbpo
    lerobot = policy_setup.lerobot
    shape = policy_shape(policy_setup.backend, policy_setup.pretrained)
    precision = "fp32" if config.devices.dtype == "float32" else "bf16_fp32_master"
    bc_trainable = lerobot.bc_trainable
    if bc_trainable == "lerobot":  # the checkpoint's own flags (LeRobot's defaults where it has none)
        flags = (_read_json(Path(policy_setup.pretrained).expanduser() / "config.json") if policy_setup.pretrained
                 else None) or {}
        expert_only = flags.get("train_expert_only", policy_setup.backend == "smolvla")
        freeze_vision = flags.get("freeze_vision_encoder", policy_setup.backend == "smolvla")
        bc_trainable = "expert" if expert_only else ("expert+vlm" if freeze_vision else "all")
    model = wm_setup.model
    prompts = model.prompts
    prompt_text = " ".join(str(getattr(prompts, f)) for f in ("system", "view_label", "dynamics", "predicted_label",
                                                               "wrist"))
    return PlanInputs(
        policy=shape, world_model=world_model_shape(wm_setup.pretrained), views=len(config.view_names),
        action_text_tokens=action_text_tokens(wm_setup.data.chunk_size, action_dim),
        prompt_tokens=len(prompt_text.split()) * 2, precision=precision,
        policy_checkpointing=lerobot.gradient_checkpointing, wm_checkpointing=wm_setup.train.gradient_checkpointing,
        wm_train_llm_layers=wm_setup.train.train_llm_layers,
        bc_batch=policy_setup.bc.batch_size, bc_train_vlm=bc_trainable in ("expert+vlm", "all"),
        bc_train_vision=bc_trainable == "all", rl_train_vlm=lerobot.train_vlm_in_rl, wm_batch=wm_setup.train.batch_size,
        wm_reward_batch=wm_setup.train.reward_batch_size, wm_freeze_vision=wm_setup.train.freeze_vision,
        rollout_batch=mbpo.rollout_batch_size, ppo_minibatch=mbpo.minibatch_size,
        ivd=model.ivd, vq_context=model.vq_context,
        value_head_parameters=_value_head_parameters(shape, lerobot.value_head.hidden_sizes))


def _value_head_parameters(shape: PolicyShape, hidden_sizes: Iterable[int]) -> int:
    sizes = [shape.vlm.hidden, *hidden_sizes, 1]
    return sum(a * b + b for a, b in zip(sizes, sizes[1:]))


def plan_for_pipeline(config: Any, gpu_gib: float | None = None) -> MemoryPlan:
    memory = getattr(config, "memory", None)
    gib = float(gpu_gib if gpu_gib is not None else getattr(memory, "gpu_gb", 0.0))
    return make_plan(inputs_from_pipeline(config), gib)


@dataclass
class MemorySetup:
    """How the loop fits its GPU (``memory:`` in a pipeline config)."""

    gpu_gb: float = 0.0  # > 0: refuse at start-up a config whose plan does not fit this many GiB

    def __post_init__(self) -> None:
        if self.gpu_gb < 0:
            raise ValueError(f"memory.gpu_gb must be >= 0, got {self.gpu_gb}")



class PlanDoesNotFit(RuntimeError):
    """A config whose estimated peak exceeds ``memory.gpu_gb`` in some phase."""


def check_fits(config: Any) -> None:
    """Raise ``PlanDoesNotFit`` (one line) when ``memory.gpu_gb`` is set and a phase does not fit."""
    memory = getattr(config, "memory", None)
    if memory is None or memory.gpu_gb <= 0:
        return
    refusal = plan_for_pipeline(config).refusal()
    if refusal:
        raise PlanDoesNotFit(refusal)
