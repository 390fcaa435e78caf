"""LeRobot's flow-matching VLAs (pi0, pi0.5, SmolVLA) behind ``RLChunkPolicy``.

The LeRobot policy object is used as is (``from_pretrained`` from a local directory, its own pre/post-processor
pipelines for normalization and tokenization); this adapter only drives its denoising loop:

- prefix: the policy's ``embed_prefix`` and one backbone pass with ``use_cache=True`` give the KV cache and the
  prefix hidden states; their mask-weighted mean feeds the value head (MLP, default 1024-512-256-128-1);
- velocity: the policy's ``denoise_step`` on that cache is the velocity function of ``flow_sde.sample_chain``
  (LeRobot's time convention, t = 1 noise and steps of -1/K, is the one ``flow_sde`` uses);
- the chain lives in the policy's normalized, padded action space (``max_action_dim``); the chunk log-prob is
  taken over the executed steps (``n_action_steps``) and the real action dimensions only, so padding adds no
  noise to the PPO ratio;
- RL trains the action expert and its projections (and the value head); the VLM backbone stays frozen unless
  ``train_vlm_in_rl`` is set, in which case the prefix is recomputed with gradients. BC/SFT trains what
  ``bc_trainable`` names. Parameters that never reach a loss (the language-model heads) never train.
- ``dtype: bfloat16``: what trains is held in float32 (master weights), the rest in bf16, and the caller runs
  the forward under bf16 autocast (util/precision.py);
- ``from_lerobot(..., robot=RobotInterface)`` fits a pretrained checkpoint to the robot's dims, views and
  executed chunk first (lerobot_robot.py); its statistics are then refitted on the robot's data.

Checkpoint directory (type "lerobot_flow"), self-contained so that it loads offline:
``config.json`` (adapter settings), ``model.safetensors`` (value head), ``lerobot/`` (the policy's
``save_pretrained`` plus its processor pipelines), ``tokenizer/`` (the tokenizer the preprocessor uses) and, for
SmolVLA, ``vlm/`` (the backbone config and processor its constructor reads). Everything is safetensors or JSON.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vla_mbpo_ros.core.data.episode import Observation
from vla_mbpo_ros.core.policy.base import ChunkSample, ObsBatch, register_policy_type
from vla_mbpo_ros.core.policy.checkpoint import load_tensors, read_config, save_checkpoint
from vla_mbpo_ros.core.policy.flow_sde import (
    FlowSDEConfig,
    VelocityFn,
    gaussian_log_prob,
    sample_chain,
    stochastic_transition,
)
from vla_mbpo_ros.core.policy.value_head import ValueHead, ValueHeadConfig, masked_mean_pool
from vla_mbpo_ros.core.policy.lerobot_robot import RobotInterface, adapt_config, normalizer_dims
from vla_mbpo_ros.core.util.config import build_nested_configs
from vla_mbpo_ros.core.util.precision import cast_for_training

POLICY_TYPE = "lerobot_flow"
BACKENDS = ("pi0", "pi05", "smolvla")
LEROBOT_DIR, TOKENIZER_DIR, VLM_DIR = "lerobot", "tokenizer", "vlm"
PREPROCESSOR_FILE, POSTPROCESSOR_FILE = "policy_preprocessor.json", "policy_postprocessor.json"
# Parameters of the VLM backbone (frozen in RL by default), by backend.
_VLM_PREFIX = {"pi0": "paligemma_with_expert.paligemma.", "pi05": "paligemma_with_expert.paligemma.",
               "smolvla": "vlm_with_expert.vlm."}
_VISION_PREFIX = {"pi0": "paligemma_with_expert.paligemma.model.vision_tower.",
                  "pi05": "paligemma_with_expert.paligemma.model.vision_tower.",
                  "smolvla": "vlm_with_expert.vlm.model.vision_model."}
# expert: action expert + projections; expert+vlm: + the language backbone; all: + the vision tower;
# lerobot: what the LeRobot config's own train_expert_only / freeze_vision_encoder say.
TRAINABLE = ("expert", "expert+vlm", "all", "lerobot")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass
class LeRobotFlowConfig:
    """Adapter settings; the LeRobot policy keeps its own config (``lerobot/config.json``)."""

    view_keys: dict[str, str] = field(default_factory=dict)  # view name -> LeRobot image key; default
    # observation.images.<view> for every image feature of the policy
    inference_steps: int = 0  # deterministic denoising steps at deployment; 0: sde.num_steps, the chain RL optimises
    deploy_noise: str = "zero"  # "zero": start the ODE at the prior mean (deterministic); "sample": random
    train_vlm_in_rl: bool = False  # RL trains the action expert (+ projections) only unless set
    bc_trainable: str = "lerobot"  # what BC/SFT trains: expert | expert+vlm | all | lerobot (its config's flags)
    gradient_checkpointing: bool = False  # pi0/pi0.5: LeRobot's per-layer checkpointing in BC and PPO
    dtype: str = "float32"  # bfloat16: fp32 masters for what trains, bf16 for the rest (run under autocast)
    device: str = "cpu"
    sde: FlowSDEConfig = field(default_factory=FlowSDEConfig)
    value_head: ValueHeadConfig = field(default_factory=ValueHeadConfig)

    def __post_init__(self) -> None:
        build_nested_configs(self, sde=FlowSDEConfig, value_head=ValueHeadConfig)
        self.view_keys = {str(k): str(v) for k, v in dict(self.view_keys).items()}
        if self.inference_steps < 0:
            raise ValueError(f"inference_steps must be >= 0, got {self.inference_steps}")
        if self.deploy_noise not in ("zero", "sample"):
            raise ValueError(f"deploy_noise must be 'zero' or 'sample', got {self.deploy_noise!r}")
        if self.bc_trainable not in TRAINABLE:
            raise ValueError(f"bc_trainable: expected one of {list(TRAINABLE)}, got {self.bc_trainable!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype: expected one of {list(DTYPES)}, got {self.dtype!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LeRobotFlowConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown LeRobotFlowConfig fields: {sorted(unknown)}")
        return cls(**data)


@dataclass
class _Prefix:
    velocity: VelocityFn
    pooled: torch.Tensor  # (B, D) mean of the prefix hidden states over valid tokens


def backend_of(lerobot_policy: Any) -> str:
    name = getattr(lerobot_policy, "name", None)
    if name not in BACKENDS:
        raise ValueError(f"unsupported LeRobot policy {name!r}; supported: {BACKENDS}")
    return name


class LeRobotFlowPolicy(nn.Module):
    """A LeRobot pi0 / pi0.5 / SmolVLA policy as ``ChunkPolicy`` and ``RLChunkPolicy``."""

    def __init__(self, lerobot_policy: nn.Module, preprocessor: Any, postprocessor: Any,
                 config: LeRobotFlowConfig | None = None, version: str = "0") -> None:
        super().__init__()
        self.config = config or LeRobotFlowConfig()
        self.backend = backend_of(lerobot_policy)
        self.lerobot = lerobot_policy
        self.preprocessor = preprocessor
        self.postprocessor = postprocessor
        self.version = version
        lerobot_config = lerobot_policy.config
        self.model_chunk = int(lerobot_config.chunk_size)  # actions the model denoises per chunk
        self.chunk_size = int(lerobot_config.n_action_steps)  # k: actions executed per chunk
        self.action_dim = int(lerobot_config.output_features["action"].shape[0])
        self.padded_action_dim = int(lerobot_config.max_action_dim)
        image_keys = list(lerobot_config.image_features)
        if self.config.view_keys:
            unknown = sorted(set(self.config.view_keys.values()) - set(image_keys))
            if unknown:
                raise ValueError(f"view_keys name image features {unknown} the policy lacks; it has {image_keys}")
            self.view_keys = dict(self.config.view_keys)
        else:
            self.view_keys = {key.rsplit(".", 1)[-1]: key for key in image_keys}
        self.view_names = tuple(self.view_keys)
        self.inference_steps = self.config.inference_steps or self.config.sde.num_steps
        self.value_head = ValueHead(self._prefix_width(), self.config.value_head).to(self.config.device)
        self._tokenizer_dir: Path | None = None  # a local tokenizer named instead of the config's (offline)
        state = lerobot_config.input_features.get("observation.state")
        state_dim = int(state.shape[0]) if state is not None else None
        self._stats_fit_robot = (normalizer_dims(postprocessor).get("action", self.action_dim) == self.action_dim
                                 and normalizer_dims(preprocessor).get("observation.state", state_dim) == state_dim)
        self._actor_names = self._trainable_names("expert+vlm" if self.config.train_vlm_in_rl else "expert")
        self.select_trainable(self._actor_names)  # RL's selection (and precision) until BC asks for its own

    # ----------------------------------------------------------------- what trains
    def _trainable_names(self, which: str) -> list[str]:
        """Names (in ``self.lerobot.model``) of the parameters ``which`` trains; never the unused LM heads."""
        if which == "lerobot":
            lerobot_config = self.lerobot.config
            which = "expert" if getattr(lerobot_config, "train_expert_only", False) else \
                ("expert+vlm" if getattr(lerobot_config, "freeze_vision_encoder", False) else "all")
        vlm, vision = _VLM_PREFIX[self.backend], _VISION_PREFIX[self.backend]
        names = []
        for name, _ in self.lerobot.model.named_parameters():
            if "lm_head" in name:
                continue
            if name.startswith(vision):
                trains = which == "all"
            elif name.startswith(vlm):
                trains = which in ("expert+vlm", "all")
            else:
                trains = True
            if trains:
                names.append(name)
        return names

    def select_trainable(self, names: list[str]) -> list[nn.Parameter]:
        """Make exactly ``names`` trainable (requires_grad), in fp32 when ``dtype`` is bf16 and the rest in bf16."""
        named = dict(self.lerobot.model.named_parameters())
        chosen = [named[n] for n in names]
        if self.config.dtype == "bfloat16":
            cast_for_training(self.lerobot.model, chosen, torch.bfloat16)
        else:
            keep = {id(p) for p in chosen}
            for param in self.lerobot.model.parameters():
                param.requires_grad_(id(param) in keep)
        return chosen

    @property
    def image_size(self) -> int | None:
        """Views are resized by the policy's own preprocessing: any input size works."""
        return None

    @property
    def train_chunk_size(self) -> int:
        return self.model_chunk  # the model denoises (and learns) more actions than it executes

    def _prefix_width(self) -> int:
        model = self.lerobot.model
        if self.backend == "smolvla":
            return int(model.vlm_with_expert.config.text_config.hidden_size)
        return int(model.paligemma_with_expert.paligemma.config.text_config.hidden_size)

    # ----------------------------------------------------------------- inputs
    def _lerobot_batch(self, batch: ObsBatch, actions: torch.Tensor | None = None,
                       action_valid: torch.Tensor | None = None) -> dict[str, Any]:
        """ObsBatch (+ action chunks for training) -> the policy's preprocessed batch (normalized state and
        actions, tokenized task, images in [0, 1])."""
        if not self._stats_fit_robot:
            raise RuntimeError("the policy's normalisation statistics are the pretrained checkpoint's, for another "
                               "action size: fit_normalization on the robot's data first (policy.bc)")
        missing = [n for n in self.view_names if n not in batch.views]
        if missing:
            raise ValueError(f"observation lacks views {missing}; policy expects {list(self.view_names)}")
        raw: dict[str, Any] = {
            key: torch.from_numpy(np.ascontiguousarray(batch.views[name])).permute(0, 3, 1, 2).float() / 255.0
            for name, key in self.view_keys.items()}
        raw["observation.state"] = torch.from_numpy(batch.states)
        raw["task"] = list(batch.instructions)
        if actions is not None:
            raw["action"] = actions.float()
            raw["action_is_pad"] = ~action_valid.bool()
        return self.preprocessor(raw)

    def _prefix(self, batch: ObsBatch, with_grad: bool) -> _Prefix:
        """Prefix pass (KV cache + pooled hidden states) and the velocity function on that cache."""
        from lerobot.policies.common.vla_utils import make_att_2d_masks, prepare_attention_masks_4d

        processed = self._lerobot_batch(batch)
        policy, model = self.lerobot, self.lerobot.model
        tokens = processed["observation.language.tokens"]
        token_masks = processed["observation.language.attention_mask"]
        with torch.set_grad_enabled(with_grad):
            if self.backend == "smolvla":
                images, image_masks = policy.prepare_images(processed)
                state = policy.prepare_state(processed)
                embeddings, pad_masks, att_masks = model.embed_prefix(images, image_masks, tokens, token_masks,
                                                                      state=state)
                (hidden, _), cache = model.vlm_with_expert.forward(
                    attention_mask=make_att_2d_masks(pad_masks, att_masks),
                    position_ids=torch.cumsum(pad_masks, dim=1) - 1, past_key_values=None,
                    inputs_embeds=[embeddings, None], use_cache=True)
                velocity: VelocityFn = lambda x, t: model.denoise_step(pad_masks, cache, x, t)  # noqa: E731
            else:
                images, image_masks = policy._preprocess_images(processed)
                embeddings, pad_masks, att_masks = model.embed_prefix(images, image_masks, tokens, token_masks)
                # As sample_actions does: eager attention for the masked prefix pass.
                model.paligemma_with_expert.paligemma.model.language_model.config._attn_implementation = "eager"
                (hidden, _), cache = model.paligemma_with_expert.forward(
                    attention_mask=prepare_attention_masks_4d(make_att_2d_masks(pad_masks, att_masks)),
                    position_ids=torch.cumsum(pad_masks, dim=1) - 1, past_key_values=None,
                    inputs_embeds=[embeddings, None], use_cache=True)
                if self.backend == "pi0":
                    state = policy.prepare_state(processed)
                    velocity = lambda x, t: model.denoise_step(state, pad_masks, cache, x, t)  # noqa: E731
                else:
                    velocity = lambda x, t: model.denoise_step(pad_masks, cache, x, t)  # noqa: E731
        pooled = masked_mean_pool(hidden.float(), pad_masks.bool())
        return _Prefix(velocity=lambda x, t: velocity(x, t.to(device=x.device, dtype=torch.float32)).to(x.dtype),
                       pooled=pooled)

    def _noise(self, size: int, generator: torch.Generator | None, zero: bool) -> torch.Tensor:
        shape = (size, self.model_chunk, self.padded_action_dim)
        if zero:
            return torch.zeros(shape)
        return torch.randn(shape, generator=generator)

    def _unnormalize(self, chain_end: torch.Tensor) -> np.ndarray:
        actions = chain_end[:, : self.chunk_size, : self.action_dim].float().cpu()
        return np.asarray(self.postprocessor(actions).cpu().numpy(), dtype=np.float32)

    def _log_prob(self, velocity: VelocityFn, chain: torch.Tensor, denoise_index: torch.Tensor) -> torch.Tensor:
        """Log-density of each chain's stochastic transition, over executed steps and real action dims.

        The velocity of that one step runs with autocast off (fp32 expert masters; the frozen prefix cache stays
        bf16): a chunk's log-density sums k x d terms scaled by 1/sigma^2, so bf16 rounding that differs between
        the rollout batch and the PPO minibatch (other GEMM kernels) would move the first ratio away from 1."""
        with torch.autocast(torch.device(self.config.device).type, enabled=False):
            x_next, mean, std = stochastic_transition(velocity, chain.float(), denoise_index, self.config.sde)
        executed = (slice(None), slice(0, self.chunk_size), slice(0, self.action_dim))
        return gaussian_log_prob(x_next[executed].float(), mean[executed].float(), std.expand_as(mean)[executed].float())

    # ----------------------------------------------------------------- deployment
    @torch.no_grad()
    def predict_chunks(self, batch: ObsBatch) -> np.ndarray:
        """Deterministic chunks (B,k,d), unnormalized, by Euler integration with ``inference_steps``."""
        prefix = self._prefix(batch, with_grad=False)
        noise = self._noise(len(batch), None, zero=self.config.deploy_noise == "zero").to(self.config.device)
        sde = FlowSDEConfig(num_steps=self.inference_steps, noise_level=self.config.sde.noise_level)
        return self._unnormalize(sample_chain(prefix.velocity, noise, sde, denoise_index=None)[:, -1])

    def predict_chunk(self, obs: Observation) -> np.ndarray:
        return self.predict_chunks(ObsBatch.from_observations([obs]))[0]

    def reset(self) -> None:
        self.lerobot.reset()

    # ----------------------------------------------------------------- RL
    @torch.no_grad()
    def sample_chunks(self, batch: ObsBatch, generator: torch.Generator) -> ChunkSample:
        """Flow-SDE chunks (K = sde.num_steps, one random stochastic step per sample) with log-prob and value."""
        prefix = self._prefix(batch, with_grad=False)
        sde = self.config.sde
        noise = self._noise(len(batch), generator, zero=False)
        denoise_index = torch.randint(0, sde.num_steps, (len(batch),), generator=generator)
        chain = sample_chain(prefix.velocity, noise.to(self.config.device), sde, denoise_index, generator)
        return ChunkSample(actions=self._unnormalize(chain[:, -1]), chain=chain.cpu(), denoise_index=denoise_index,
                           log_prob=self._log_prob(prefix.velocity, chain, denoise_index).cpu(),
                           value=self.value_head(prefix.pooled).cpu())

    def evaluate_chains(self, batch: ObsBatch, chain: torch.Tensor, denoise_index: torch.Tensor,
                        with_value: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Log-prob of stored chains under the current parameters (grad to the actor), and V from the prefix."""
        prefix = self._prefix(batch, with_grad=self.config.train_vlm_in_rl)
        log_prob = self._log_prob(prefix.velocity, chain.to(self.config.device), denoise_index)
        value = self.value_head(prefix.pooled.detach()) if with_value else None
        return log_prob, value

    def value(self, batch: ObsBatch) -> torch.Tensor:
        with torch.no_grad():
            pooled = self._prefix(batch, with_grad=False).pooled
        return self.value_head(pooled)

    def actor_parameters(self) -> list[nn.Parameter]:
        named = dict(self.lerobot.model.named_parameters())
        return [named[name] for name in self._actor_names]

    def critic_parameters(self) -> list[nn.Parameter]:
        return list(self.value_head.parameters())

    # ----------------------------------------------------------------- supervised finetuning
    @property
    def normalization_fitted(self) -> bool:
        return self._stats_fit_robot  # the checkpoint's statistics, unless they are another robot's

    def fit_normalization(self, states: np.ndarray, actions: np.ndarray) -> None:
        """Normalization statistics of the robot's own data (as LeRobot's finetuning recomputes them)."""
        from lerobot.policies.factory import make_pre_post_processors

        def summary(data: np.ndarray) -> dict[str, torch.Tensor]:
            data = np.asarray(data, dtype=np.float32)
            stats = {"mean": data.mean(0), "std": data.std(0), "min": data.min(0), "max": data.max(0)}
            stats.update({f"q{q:02d}": np.quantile(data, q / 100, axis=0) for q in (1, 10, 50, 90, 99)})
            return {key: torch.as_tensor(value, dtype=torch.float32) for key, value in stats.items()}

        overrides: dict[str, dict[str, Any]] = {"device_processor": {"device": self.config.device}}
        if self._tokenizer_dir is not None:
            overrides["tokenizer_processor"] = {"tokenizer_name": str(self._tokenizer_dir)}
        self.preprocessor, self.postprocessor = make_pre_post_processors(
            self.lerobot.config, dataset_stats={"observation.state": summary(states), "action": summary(actions)},
            preprocessor_overrides=overrides)
        self._stats_fit_robot = True

    def bc_parameters(self) -> list[nn.Parameter]:
        """What ``bc_trainable`` names, made trainable now (and fp32 masters under bf16); the rest frozen."""
        return self.select_trainable(self._trainable_names(self.config.bc_trainable))

    def flow_matching_loss(self, batch: ObsBatch, actions: torch.Tensor, action_valid: torch.Tensor,
                           generator: torch.Generator | None = None) -> torch.Tensor:
        """The policy's own flow-matching loss on (B, model chunk, d) action chunks, padding masked."""
        loss, _ = self.lerobot.forward(self._lerobot_batch(batch, actions, action_valid))
        return loss

    # ----------------------------------------------------------------- checkpoints
    def save(self, directory: Path) -> None:
        directory = Path(directory)
        lerobot_dir = directory / LEROBOT_DIR
        self.lerobot.save_pretrained(lerobot_dir)
        self.preprocessor.save_pretrained(lerobot_dir, config_filename=PREPROCESSOR_FILE)
        self.postprocessor.save_pretrained(lerobot_dir, config_filename=POSTPROCESSOR_FILE)
        tokenizer = _tokenizer_step(self.preprocessor)
        if tokenizer is not None:
            tokenizer.input_tokenizer.save_pretrained(directory / TOKENIZER_DIR)
        if self.backend == "smolvla":
            backbone = self.lerobot.model.vlm_with_expert
            backbone.config.save_pretrained(directory / VLM_DIR)
            backbone.processor.save_pretrained(directory / VLM_DIR)
        config = {"type": POLICY_TYPE, "version": self.version, "backend": self.backend,
                  "adapter": self.config.to_dict()}
        save_checkpoint(directory, {f"value_head.{k}": v for k, v in self.value_head.state_dict().items()}, config)

    @classmethod
    def load(cls, directory: Path, device: str | None = None) -> "LeRobotFlowPolicy":
        """Load a checkpoint written by :meth:`save` (offline: tokenizer and VLM config come from it)."""
        directory = Path(directory)
        config = read_config(directory)
        if config["type"] != POLICY_TYPE:
            raise ValueError(f"{directory} holds a {config['type']!r} checkpoint, not {POLICY_TYPE!r}")
        adapter = LeRobotFlowConfig.from_dict(config["adapter"])
        if device is not None:
            adapter.device = device
        policy = cls.from_lerobot(directory / LEROBOT_DIR, adapter, version=str(config.get("version", "0")),
                                  tokenizer_dir=_optional_dir(directory / TOKENIZER_DIR),
                                  vlm_dir=_optional_dir(directory / VLM_DIR))
        tensors = load_tensors(directory)
        policy.value_head.load_state_dict(
            {k.removeprefix("value_head."): v for k, v in tensors.items() if k.startswith("value_head.")})
        return policy.eval()

    @classmethod
    def from_lerobot(cls, lerobot_dir: Path, config: LeRobotFlowConfig | None = None, version: str = "0",
                     tokenizer_dir: Path | None = None, vlm_dir: Path | None = None,
                     robot: RobotInterface | None = None) -> "LeRobotFlowPolicy":
        """Wrap a LeRobot checkpoint directory (``save_pretrained`` + its processor pipelines).

        ``tokenizer_dir`` replaces the tokenizer the preprocessor names (e.g. a local copy of PaliGemma's when
        offline); ``vlm_dir`` replaces SmolVLA's ``vlm_model_name`` (backbone config + processor); ``robot``
        adapts the checkpoint to the robot's dims, views and executed chunk (lerobot_robot.adapt_config).
        """
        from lerobot.configs import PreTrainedConfig
        from lerobot.policies.factory import get_policy_class, make_pre_post_processors

        config = config or LeRobotFlowConfig()
        lerobot_dir = Path(lerobot_dir)
        lerobot_config = PreTrainedConfig.from_pretrained(lerobot_dir)
        if lerobot_config.type not in BACKENDS:
            raise ValueError(f"{lerobot_dir} holds a LeRobot {lerobot_config.type!r} policy; supported: {BACKENDS}")
        lerobot_config.device = config.device
        if vlm_dir is not None:
            lerobot_config.vlm_model_name = str(vlm_dir)
        if tokenizer_dir is not None and not Path(tokenizer_dir).is_dir():
            raise FileNotFoundError(f"policy.tokenizer: {tokenizer_dir} is not a directory (a local tokenizer, e.g. "
                                    "PaliGemma's for pi0/pi0.5, saved with save_pretrained)")
        if config.gradient_checkpointing:
            if not hasattr(lerobot_config, "gradient_checkpointing"):
                raise ValueError(f"gradient_checkpointing: LeRobot's {lerobot_config.type} has no gradient "
                                 "checkpointing (pi0 / pi0.5 do)")
            lerobot_config.gradient_checkpointing = True
        if robot is not None:
            config = dataclasses.replace(config, view_keys=dict(robot.view_keys))  # the robot's view names
            changes = adapt_config(lerobot_config, robot, str(lerobot_dir))
            if changes:
                print(f"[lerobot_adapter] adapted {lerobot_dir.name} to the robot: {'; '.join(changes)}", flush=True)
        lerobot_policy = get_policy_class(lerobot_config.type).from_pretrained(lerobot_dir, config=lerobot_config)
        lerobot_policy.eval()
        overrides: dict[str, dict[str, Any]] = {"device_processor": {"device": config.device}}
        if tokenizer_dir is not None:
            overrides["tokenizer_processor"] = {"tokenizer_name": str(tokenizer_dir)}
        preprocessor, postprocessor = make_pre_post_processors(
            lerobot_config, pretrained_path=str(lerobot_dir), preprocessor_overrides=overrides,
            preprocessor_config_filename=PREPROCESSOR_FILE, postprocessor_config_filename=POSTPROCESSOR_FILE)
        policy = cls(lerobot_policy, preprocessor, postprocessor, config, version)
        policy._tokenizer_dir = tokenizer_dir
        return policy.eval()


def _tokenizer_step(pipeline: Any) -> Any:
    for step in getattr(pipeline, "steps", []):
        if getattr(step, "input_tokenizer", None) is not None:
            return step
    return None


def _optional_dir(path: Path) -> Path | None:
    return path if path.is_dir() else None


def _load(directory: Path, device: str = "cpu") -> LeRobotFlowPolicy:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return LeRobotFlowPolicy.load(directory, device=device)


register_policy_type(POLICY_TYPE, _load)
