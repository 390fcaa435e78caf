"""Tiny models saved the way real ones are shipped, for tests of the real loading paths (offline).

* a LeRobot SmolVLA on a tiny SmolVLM backbone: SmolVLA reads its VLM config and processor with
  ``from_pretrained(vlm_model_name)``; offline, a tiny SmolVLM config, a word-level tokenizer and a
  processor are saved to a directory and named there (DESIGN.md section 5);
* a plain Janus snapshot (weights, tokenizer, image processor; no world-model files), as a Janus-Pro
  download would be.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

VIEWS = ("head", "wrist")
IMAGE = 32
CHUNK, EXECUTED, ACTION_DIM, PADDED = 6, 4, 6, 8


def save_tiny_smolvlm(directory: Path) -> Path:
    """A SmolVLM config (2-layer, 64-wide Llama; 1-layer SigLIP at 32 px), tokenizer and processor."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, SmolVLMConfig, SmolVLMImageProcessor, SmolVLMProcessor
    from transformers.models.smolvlm.video_processing_smolvlm import SmolVLMVideoProcessor

    special = ["<pad>", "<unk>", "<end_of_utterance>", "<fake_token_around_image>", "<global-img>", "<image>",
               "<video>"]
    vocab = {token: i for i, token in enumerate(special + ["pick", "up", "the", "cube", "put", "down", "red"])}
    word_level = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    word_level.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=word_level, pad_token="<pad>", unk_token="<unk>",
        extra_special_tokens={"fake_image_token": "<fake_token_around_image>", "global_image_token": "<global-img>",
                              "image_token": "<image>", "end_of_utterance_token": "<end_of_utterance>"})
    config = SmolVLMConfig(
        text_config=dict(model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=len(vocab),
                         max_position_embeddings=256, pad_token_id=0),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=IMAGE, patch_size=8),
        scale_factor=2, image_token_id=vocab["<image>"], pad_token_id=0)
    config.save_pretrained(directory)
    SmolVLMProcessor(image_processor=SmolVLMImageProcessor(), tokenizer=tokenizer,
                     video_processor=SmolVLMVideoProcessor(), image_seq_len=4).save_pretrained(directory)
    return directory


def save_tiny_smolvla(directory: Path, vlm_dir: Path) -> Path:
    """A random-weight SmolVLA on the tiny backbone, saved with its processor pipelines (fake dataset stats)."""
    from lerobot.configs import FeatureType, PolicyFeature
    from lerobot.policies.factory import make_pre_post_processors
    from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

    features = {f"observation.images.{v}": PolicyFeature(FeatureType.VISUAL, (3, IMAGE, IMAGE)) for v in VIEWS}
    features["observation.state"] = PolicyFeature(FeatureType.STATE, (6,))
    config = SmolVLAConfig(
        vlm_model_name=str(vlm_dir), load_vlm_weights=False, input_features=features,
        output_features={"action": PolicyFeature(FeatureType.ACTION, (ACTION_DIM,))}, chunk_size=CHUNK,
        n_action_steps=EXECUTED, num_vlm_layers=2, resize_imgs_with_padding=(IMAGE, IMAGE), device="cpu",
        max_state_dim=PADDED, max_action_dim=PADDED, num_steps=5)
    torch.manual_seed(0)
    policy = SmolVLAPolicy(config)
    stats = {"observation.state": {"mean": torch.zeros(6), "std": torch.ones(6)},
             "action": {"mean": torch.linspace(-1.0, 1.0, ACTION_DIM), "std": torch.full((ACTION_DIM,), 0.5)}}
    preprocessor, postprocessor = make_pre_post_processors(config, dataset_stats=stats)
    policy.save_pretrained(directory)
    preprocessor.save_pretrained(directory, config_filename="policy_preprocessor.json")
    postprocessor.save_pretrained(directory, config_filename="policy_postprocessor.json")
    return directory


def save_tiny_janus_snapshot(directory: Path, image_size: int = 32, seed: int = 0) -> Path:
    """A random-weight tiny Janus saved like a hub snapshot: no world_model_config.json, no action statistics."""
    from vla_mbpo_ros.core.world_model.codec import ActionStats
    from vla_mbpo_ros.core.world_model.configuration import TinyArchConfig
    from vla_mbpo_ros.core.world_model.umm import UMMWorldModel

    arch = TinyArchConfig(image_size=image_size, tokens_per_side=4, hidden_size=64, num_layers=2, num_heads=2,
                          intermediate_size=128, codebook_size=64, tokenizer_vocab_size=500)
    stats = ActionStats(low=-np.ones(6), high=np.ones(6))
    model = UMMWorldModel.tiny(VIEWS, stats, image_size, seed, arch=arch, instructions=["pick up the cube"])
    model.core.janus.save_pretrained(directory)
    model.core.tokenizer.save_pretrained(directory)
    model.core.image_processor.save_pretrained(directory)
    return directory
