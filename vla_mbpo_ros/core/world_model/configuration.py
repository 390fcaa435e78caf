"""Configuration of the UMM world model: how the model is used (``WorldModelConfig``), the tiny CPU
architecture (``TinyArchConfig``), and the in-process tokenizer and Janus config of the tiny model."""

from __future__ import annotations

import dataclasses
import math
import string
from dataclasses import dataclass, field
from typing import Sequence

from transformers import JanusConfig, PreTrainedTokenizerFast

from vla_mbpo_ros.core.world_model.sequence import PromptTemplates

WORLD_MODEL_CONFIG_FILE = "world_model_config.json"
REWARD_FROM = ("next_frame", "transition")
SPECIAL_TOKENS = {
    "pad_token": "<pad>",
    "unk_token": "<unk>",
    "bos_token": "<bos>",
    "eos_token": "<eos>",
}
IMAGE_TOKENS = {"image_token": "<image_placeholder>", "boi_token": "<begin_of_image>", "eoi_token": "<end_of_image>"}


@dataclass
class WorldModelConfig:
    """How the UMM is used as a world model (saved next to the weights)."""

    view_names: tuple[str, ...] = ("head", "wrist")  # first = head (global) view
    n_bins: int = 256  # action text integers are 0..n_bins
    ivd: bool = True  # interleaved view decoding; False = every view from the inputs (ablation)
    vq_context: bool = True  # current views also enter as VQ tokens (copyable), not only as features
    temperature: float = 0.0  # image-token sampling temperature; 0 = greedy
    top_k: int = 0  # sample from the k most likely tokens; 0 = all
    # Logit bonus for repeating, at each position, the token the view has now (needs vq_context): a
    # residual prior for small models; 0 = the plain Janus head (a pretrained Janus-Pro needs none).
    copy_prior: float = 0.0
    # Reward = 1 where P(Yes | Yes or No) > reward_threshold; calibrated on held-out frames (precision first:
    # an imagined false success is what RL exploits).
    reward_threshold: float = 0.5
    # What the Yes/No reward reads: "next_frame" = the head view the model generated (the paper's), or
    # "transition" = the current views and the action chunk ("will the task be done after these
    # actions?"), trained on real transitions labelled with the outcome k steps later; a small model's
    # generated frames do not show the outcome (learning bench, issue 20).
    reward_from: str = "next_frame"
    # Imagined joint state after a chunk = the chunk's last (absolute joint-target) action: the arm's servos
    # track their targets, and a state frozen at the branch start would tell the policy it never moved.
    state_from_actions: bool = True
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
        if self.copy_prior < 0 or (self.copy_prior and not self.vq_context):
            raise ValueError(f"copy_prior must be >= 0 and needs vq_context, got {self.copy_prior} (vq_context {self.vq_context})")
        if self.reward_from not in REWARD_FROM:
            raise ValueError(f"reward_from must be one of {REWARD_FROM}, got {self.reward_from!r}")
        if not 0.0 < self.reward_threshold < 1.0:
            raise ValueError(f"reward_threshold must be in (0, 1), got {self.reward_threshold}")

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

    tokenizer = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    special = list(SPECIAL_TOKENS.values()) + list(IMAGE_TOKENS.values())
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
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **SPECIAL_TOKENS, extra_special_tokens=IMAGE_TOKENS)


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
