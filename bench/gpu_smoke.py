"""One run of the real loop code on a GPU setup, with random weights of the pretrained checkpoints' shapes:

    . scripts/env.sh && python bench/gpu_smoke.py --config config/finetune_gpu.yaml        # one CUDA GPU
    . scripts/env.sh && python bench/gpu_smoke.py --config config/finetune_gpu_24gb.yaml
    . scripts/env.sh && python bench/gpu_smoke.py --config config/finetune_gpu.yaml --tiny # CPU, toy widths

1. Local snapshots, nothing downloaded: the policy as its pretrained checkpoint is shaped (pi05_base: PaliGemma
   2B + Gemma 300M expert, 32-d padded state/action, three cameras, chunk 50 executed whole; SmolVLA base: a
   SmolVLM2-500M-shaped backbone, 32-d, three cameras, chunk 50) with a locally built word-level tokenizer,
   and a Janus-Pro-1B-shaped plain Janus snapshot (deepseek-community/Janus-Pro-1B's config: Llama 2048 x 24
   layers, vocabulary 102400; SigLIP-L 384 px; VQ-16 with 16384 codes, 576 tokens per view) with a BPE
   tokenizer trained in-process on the prompt vocabulary (its ids fall inside the 102400 embeddings). The loop must therefore
   adapt the policy to the recorded robot (6-d, two views, executed chunk = the world model's frame skip).
2. A small LeRobotDataset of synthetic episodes written by the recorder's own store.
3. ``run_iteration`` (core/loop/pipeline.py) twice on the config with tiny step counts: iteration 0 = BC +
   publish, iteration 1 = world-model finetune, branched imagination + reward, PPO, publish; then the
   executor's ``load_candidate`` (sha256 + load) and ``validate_candidate`` of the published checkpoint.

Asserts: the first PPO minibatch's ratio mean within 1e-3 of 1, the trained weights changed (policy expert
and world model), every loss finite, the reloaded checkpoint reproduces the saved policy's chunk. Per phase
(bc, wm, imagine, ppo) it prints and writes to ``--out`` (JSON, rewritten after every phase) the peak
memory (CUDA: ``max_memory_allocated`` after a reset at the phase's start; ``--tiny``: the process's peak
RSS, VmHWM, reset through /proc/self/clear_refs), the time and the throughput (WM steps/s, imagined
branches/s, PPO samples/s). ``--tiny`` runs the same path at toy widths on the CPU under bf16 autocast
(the figures then mean nothing; shapes, dtypes, adaptation and selection are what it checks). The last
line states the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "bench"), str(REPO / "test")]  # pi0_adapter_check (pi0.5 builder), tiny_models (--tiny)

GIB = 2**30
VIEWS = ("head", "wrist")
ACTION_DIM = 6
INSTRUCTION = "pick up the red cube"
PRETRAINED_DIM = 32  # pi05_base / smolvla_base pad state and action to 32
# deepseek-community/Janus-Pro-1B's config.json dimensions.
JANUS_PRO_1B = dict(
    text_config=dict(model_type="llama", vocab_size=102400, hidden_size=2048, intermediate_size=5632, num_hidden_layers=24,
                     num_attention_heads=16, num_key_value_heads=16, max_position_embeddings=16384, rms_norm_eps=1e-6,
                     tie_word_embeddings=False),
    vision_config=dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, image_size=384, patch_size=16,
                       mlp_ratio=4.0, projection_dim=2048, depth=2, num_image_tokens=576),
    vq_config=dict(embed_dim=8, num_embeddings=16384, latent_channels=256, base_channels=128, channel_multiplier=[1, 1, 2, 2, 4],
                   num_res_blocks=2, projection_dim=2048, image_token_embed_dim=2048, num_hidden_layers=2),
)
PRETRAINED_CAMERAS = {"pi05": ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb"),
                      "smolvla": ("camera1", "camera2", "camera3")}


def log(message: str) -> None:
    print(f"[gpu_smoke] {message}", flush=True)


# ------------------------------------------------------------------------------------------ snapshots
def save_word_tokenizer(directory: Path, vocab_size: int, extra: tuple[str, ...] = ()) -> Path:
    """A word-level tokenizer of ``vocab_size`` entries: the prompt words, numbers 0..256, fillers."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "<unk>", "<bos>", "<eos>", *extra, *INSTRUCTION.split(), "pick", "up", "the", "cube", "Task",
             "State", "Action", ":", ",", ";", ".", "\n", *map(str, range(257))]
    vocab = {word: i for i, word in enumerate(dict.fromkeys(words))}
    vocab.update({f"<unused{i}>": i for i in range(len(vocab), vocab_size)})
    word_level = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    word_level.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=word_level, pad_token="<pad>", unk_token="<unk>", bos_token="<bos>",
                            eos_token="<eos>").save_pretrained(directory)
    return directory


def pretrained_stats(dim: int) -> dict[str, dict[str, torch.Tensor]]:
    mean = torch.linspace(-1.0, 1.0, dim)
    stats = {"mean": mean, "std": torch.full((dim,), 0.5), "q01": mean - 1.0, "q99": mean + 1.0, "min": mean - 1.5,
             "max": mean + 1.5}
    return {"observation.state": dict(stats), "action": dict(stats)}


def save_pi05_base_like(directory: Path, tokenizer: Path) -> Path:
    """Random pi0.5 of pi05_base's shapes and config (32-d, three 224 px cameras, chunk 50, executed 50)."""
    import pi0_adapter_check as pi0
    from lerobot.configs import FeatureType, PolicyFeature
    from lerobot.policies.factory import make_pre_post_processors

    config_cls, policy_cls, processor_module, modeling = pi0.lerobot_modules("pi05")
    features = {f"observation.images.{c}": PolicyFeature(FeatureType.VISUAL, (3, 224, 224))
                for c in PRETRAINED_CAMERAS["pi05"]}
    features["observation.state"] = PolicyFeature(FeatureType.STATE, (PRETRAINED_DIM,))
    config = config_cls(dtype="bfloat16", input_features=features, device="cpu",
                        output_features={"action": PolicyFeature(FeatureType.ACTION, (PRETRAINED_DIM,))})
    torch.manual_seed(0)
    with pi0.bf16_backbone(modeling):
        policy = policy_cls(config)
    with pi0.local_tokenizer(processor_module, tokenizer):
        pre, post = make_pre_post_processors(config, dataset_stats=pretrained_stats(PRETRAINED_DIM))
    policy.save_pretrained(directory)
    pre.save_pretrained(directory, config_filename="policy_preprocessor.json")
    post.save_pretrained(directory, config_filename="policy_postprocessor.json")
    return directory


def save_smolvlm_500m_like(directory: Path) -> Path:
    """SmolVLM2-500M-Video-Instruct's backbone config (text 960 wide x 32 layers, SigLIP 768 x 12 at 512 px,
    pixel shuffle 4 -> 64 tokens per image) with a word-level tokenizer of its 49280 entries, and a processor."""
    from transformers import (PreTrainedTokenizerFast, SmolVLMConfig, SmolVLMImageProcessor, SmolVLMProcessor)
    from transformers.models.smolvlm.video_processing_smolvlm import SmolVLMVideoProcessor

    special = ("<end_of_utterance>", "<fake_token_around_image>", "<global-img>", "<image>", "<video>")
    save_word_tokenizer(directory / "_tok", 49280, special)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(
        directory / "_tok", extra_special_tokens={"fake_image_token": "<fake_token_around_image>",
                                                  "global_image_token": "<global-img>", "image_token": "<image>",
                                                  "end_of_utterance_token": "<end_of_utterance>"})
    config = SmolVLMConfig(
        text_config=dict(model_type="llama", hidden_size=960, intermediate_size=2560, num_hidden_layers=32,
                         num_attention_heads=15, num_key_value_heads=5, head_dim=64, vocab_size=49280,
                         max_position_embeddings=8192, pad_token_id=0, rope_theta=100000.0),
        vision_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                           image_size=512, patch_size=16),
        scale_factor=4, image_token_id=tokenizer.convert_tokens_to_ids("<image>"), pad_token_id=0)
    config.save_pretrained(directory)
    SmolVLMProcessor(image_processor=SmolVLMImageProcessor(), tokenizer=tokenizer,
                     video_processor=SmolVLMVideoProcessor(), image_seq_len=64).save_pretrained(directory)
    return directory


def save_smolvla_like(directory: Path, vlm: Path, tiny: bool) -> Path:
    """A random SmolVLA saved as a pretrained checkpoint: three cameras, padded dims as state/action."""
    from lerobot.configs import FeatureType, PolicyFeature
    from lerobot.policies.factory import make_pre_post_processors
    from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

    if tiny:
        import tiny_models as t
        size, dim, chunk, extra = t.IMAGE, t.PADDED, 12, dict(num_vlm_layers=2, resize_imgs_with_padding=(t.IMAGE, t.IMAGE),
                                                              max_state_dim=t.PADDED, max_action_dim=t.PADDED)
    else:
        size, dim, chunk, extra = 512, PRETRAINED_DIM, 50, {}
    features = {f"observation.images.{c}": PolicyFeature(FeatureType.VISUAL, (3, size, size))
                for c in PRETRAINED_CAMERAS["smolvla"]}
    features["observation.state"] = PolicyFeature(FeatureType.STATE, (dim,))
    config = SmolVLAConfig(vlm_model_name=str(vlm), load_vlm_weights=False, input_features=features, device="cpu",
                           output_features={"action": PolicyFeature(FeatureType.ACTION, (dim,))}, chunk_size=chunk,
                           n_action_steps=chunk, **extra)
    torch.manual_seed(0)
    policy = SmolVLAPolicy(config)
    pre, post = make_pre_post_processors(config, dataset_stats=pretrained_stats(dim))
    policy.save_pretrained(directory)
    pre.save_pretrained(directory, config_filename="policy_preprocessor.json")
    post.save_pretrained(directory, config_filename="policy_postprocessor.json")
    return directory


def save_janus_snapshot(directory: Path, tiny: bool, device: str) -> Path:
    """A plain Janus snapshot (weights, tokenizer, image processor): Janus-Pro-1B's shapes, or the toy one."""
    if tiny:
        from tiny_models import save_tiny_janus_snapshot

        return save_tiny_janus_snapshot(directory)
    from transformers import JanusConfig, JanusForConditionalGeneration, JanusImageProcessor

    from vla_mbpo_ros.core.world_model.configuration import IMAGE_TOKENS, WorldModelConfig, build_tiny_tokenizer

    prompts = WorldModelConfig(view_names=VIEWS).prompts
    tokenizer = build_tiny_tokenizer(VIEWS, prompts, 256, [INSTRUCTION], 700)
    config = JanusConfig(text_config={**JANUS_PRO_1B["text_config"], "pad_token_id": tokenizer.pad_token_id},
                         vision_config=JANUS_PRO_1B["vision_config"], vq_config=JANUS_PRO_1B["vq_config"],
                         image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKENS["image_token"]),
                         tie_word_embeddings=False)
    torch.manual_seed(0)
    with torch.device(device):  # random init directly on the GPU
        janus = JanusForConditionalGeneration(config)
    janus.to(torch.bfloat16).save_pretrained(directory)  # as Janus-Pro-1B ships: bf16
    tokenizer.save_pretrained(directory)
    JanusImageProcessor(size={"height": 384, "width": 384}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(directory)
    del janus
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return directory


def record_episodes(root: Path, count: int, length: int, size: int) -> None:
    """Synthetic episodes (a moving square, smooth joint motion inside the SO-101 limits) in a real
    LeRobotDataset, written by the recorder's crash-safe store."""
    from vla_mbpo_ros.core.data.episode_store import EpisodeStore
    from vla_mbpo_ros.core.data.recording import Outcome, RecordedFrame, RecordingConfig

    store = EpisodeStore(root, RecordingConfig(image_size=(size, size), fps=10, min_free_disk_mb=0.0))
    rng = np.random.default_rng(0)
    for episode in range(count):
        store.begin(INSTRUCTION, "gpu_smoke")
        start = rng.uniform(-0.5, 0.5, ACTION_DIM)
        for t in range(length):
            q = start + 0.3 * np.sin(0.2 * t + np.arange(ACTION_DIM))
            q[-1] = 0.5 + 0.3 * np.sin(0.1 * t)  # the gripper inside its 0..1.74 range
            images = {}
            for v, view in enumerate(VIEWS):
                image = np.full((size, size, 3), 40 + 60 * v, np.uint8)
                x = (t * 2 + episode * 5) % (size - size // 4)
                image[size // 4: size // 2, x: x + size // 4] = (220, 40, 40)
                images[view] = image
            store.add(RecordedFrame(images, q.astype(np.float64), (q + 0.02).astype(np.float64), 0.1 * t, 0.1 * t))
        store.save(Outcome.SUCCESS if episode % 2 == 0 else Outcome.FAILURE)
    store.close()


# ------------------------------------------------------------------------------------------ measurements
class Meter:
    """Per-phase peak memory, seconds and counts; the JSON is rewritten after every phase."""

    def __init__(self, out: Path, device: str, figures: dict[str, Any]) -> None:
        self.out, self.device, self.figures = out, device, figures
        self.phases: dict[str, dict[str, float]] = figures.setdefault("phases", {})

    def _reset(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            with contextlib.suppress(OSError):
                Path("/proc/self/clear_refs").write_text("5")

    def _peak_gib(self) -> float:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() / GIB
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM"):
                return int(line.split()[1]) * 1024 / GIB
        return float("nan")

    def wrap(self, phase: str, fn: Callable[..., Any], count: Callable[[tuple, dict, Any], float] | None = None) -> Callable:
        @functools.wraps(fn)
        def measured(*args: Any, **kwargs: Any) -> Any:
            self._reset()
            started = time.perf_counter()
            result = fn(*args, **kwargs)
            seconds = time.perf_counter() - started
            entry = self.phases.setdefault(phase, {"peak_gib": 0.0, "seconds": 0.0, "calls": 0, "items": 0.0})
            entry["peak_gib"] = max(entry["peak_gib"], self._peak_gib())
            entry["seconds"] += seconds
            entry["calls"] += 1
            entry["items"] += count(args, kwargs, result) if count else 0.0
            if entry["items"]:
                entry["items_per_s"] = entry["items"] / entry["seconds"]
            log(f"{phase}: {seconds:.1f} s, peak {entry['peak_gib']:.2f} GiB"
                + (f", {entry['items_per_s']:.2f} /s" if entry["items"] else ""))
            self.write()
            return result
        return measured

    def write(self) -> None:
        self.out.write_text(json.dumps(self.figures, indent=2, default=float))


# ------------------------------------------------------------------------------------------ the run
def smoke_config(source: Path, snapshots: dict[str, Path], tiny: bool, device: str) -> dict[str, Any]:
    """The setup file with the snapshots, tiny step counts and (for --tiny) toy batch sizes on the CPU."""
    data = yaml.safe_load(source.read_text())
    backend = data["policy"]["backend"]
    data.update(min_episodes=2, torch_threads=int(data.get("torch_threads", 1)) if not tiny else 1)
    data["policy"].update(pretrained=str(snapshots["policy"]), tokenizer=str(snapshots.get("tokenizer", "")),
                          vlm=str(snapshots.get("vlm", "")))
    data["policy"]["bc"].update(steps=2)
    data["world_model"].update(pretrained=str(snapshots["world_model"]), min_reward_precision=0.0)
    data["world_model"]["train"].update(steps=2, warmup_steps=1)
    mbpo = data["mbpo"]
    # One refill of one rollout batch, two PPO steps with the actor (no warm-up, no reward needed), no
    # validation rollouts (accepted: the candidate is published and loaded back).
    mbpo.update(num_iterations=1, samples_per_refill=mbpo["rollout_batch_size"] * mbpo["num_chunks"], update_to_data=2,
                critic_warmup_updates=0, actor_needs_reward=False, validation_starts=0, rollback_on_drop=False)
    if tiny:
        data["devices"] = {"world_model_training": "cpu", "imagination": "cpu", "policy": "cpu",
                           "dtype": data["devices"]["dtype"]}
        data["policy"]["lerobot"].update(view_keys={}, gradient_checkpointing=False, value_head={"hidden_sizes": [32, 16]})
        data["policy"]["bc"].update(batch_size=4)
        data["world_model"]["train"].update(batch_size=2, reward_batch_size=2,
                                            train_llm_layers=min(1, data["world_model"]["train"].get("train_llm_layers", 0)))
        mbpo.update(rollout_batch_size=4, samples_per_refill=8, minibatch_size=8)
    else:
        data["devices"] = {**data["devices"], "world_model_training": device, "imagination": device, "policy": device}
    if backend == "smolvla" or tiny:
        data["policy"]["lerobot"]["gradient_checkpointing"] = False
    return data


def first_ppo_ratio(record: dict[str, Any]) -> Callable:
    from vla_mbpo_ros.core.rl.ppo import PPOUpdater

    original = PPOUpdater.update

    def update(self: Any, *args: Any, **kwargs: Any) -> dict[str, float]:
        stats = original(self, *args, **kwargs)
        if "ratio_mean" in stats and "first_ratio_mean" not in record:
            record["first_ratio_mean"] = stats["ratio_mean"]
        return stats
    return update


def changed_tensors(before: Path, after: Path, contains: str) -> int:
    """How many tensors whose name contains ``contains`` differ between two safetensors files."""
    from safetensors import safe_open

    changed = 0
    with safe_open(str(before), "pt") as a, safe_open(str(after), "pt") as b:
        for name in a.keys():
            if contains in name and name in b.keys() and not torch.equal(a.get_tensor(name).float(), b.get_tensor(name).float()):
                changed += 1
    return changed


def run(args: argparse.Namespace) -> dict[str, Any]:
    from vla_mbpo_ros.core.control.hot_swap import load_candidate, validate_candidate
    from vla_mbpo_ros.core.policy.signing import TrustedKeys, ensure_key_pair, load_private_key, sign_checkpoint
    from vla_mbpo_ros.core.control.limits import load_safety_config
    from vla_mbpo_ros.core.control.gate import SafetyGate
    from vla_mbpo_ros.core.data.episode import Observation
    from vla_mbpo_ros.core.data.reader import load_episodes
    from vla_mbpo_ros.core.loop import pipeline
    from vla_mbpo_ros.core.policy.base import ObsBatch
    from vla_mbpo_ros.core.policy.lerobot_adapter import LeRobotFlowPolicy
    from vla_mbpo_ros.core.rl.ppo import PPOUpdater
    from vla_mbpo_ros.core.rl.trainer import MBPOTrainer

    device = "cpu" if args.tiny else "cuda"
    figures: dict[str, Any] = {"config": str(args.config), "tiny": args.tiny, "device": device, "status": "running",
                               "gpu": torch.cuda.get_device_name(0) if device == "cuda" else "cpu"}
    meter = Meter(args.out, device, figures)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="gpu_smoke_"))
    source = yaml.safe_load(args.config.read_text())
    backend = source["policy"]["backend"]
    started = time.perf_counter()
    snapshots: dict[str, Path] = {}
    if args.tiny:
        import tiny_models

        snapshots["vlm"] = tiny_models.save_tiny_smolvlm(work / "vlm")
        snapshots["tokenizer"] = snapshots["vlm"]
        snapshots["policy"] = save_smolvla_like(work / "policy", snapshots["vlm"], tiny=True)
        source_backend = "smolvla"
    elif backend == "pi05":
        snapshots["tokenizer"] = save_word_tokenizer(work / "paligemma_tokenizer", 257152)
        snapshots["policy"] = save_pi05_base_like(work / "pi05_base", snapshots["tokenizer"])
        source_backend = "pi05"
    else:
        snapshots["vlm"] = save_smolvlm_500m_like(work / "smolvlm2_500m")
        snapshots["policy"] = save_smolvla_like(work / "smolvla_base", snapshots["vlm"], tiny=False)
        source_backend = "smolvla"
    snapshots["world_model"] = save_janus_snapshot(work / "janus_pro_1b", args.tiny, device)
    figures["snapshot_seconds"] = time.perf_counter() - started
    log(f"snapshots in {figures['snapshot_seconds']:.0f} s: {', '.join(f'{k}={v}' for k, v in snapshots.items())}")
    meter.write()

    dataset = work / "dataset"
    record_episodes(dataset, count=4, length=24, size=32 if args.tiny else 96)
    data = smoke_config(args.config, snapshots, args.tiny, device)
    data["policy"]["backend"] = source_backend
    config_path = work / "smoke.yaml"
    config_path.write_text(yaml.safe_dump(data))
    config = pipeline.PipelineConfig.from_yaml(config_path)

    # The loop's own functions, measured where they are called.
    wm_steps = config.world_model.train.steps
    pipeline.phase_bc = meter.wrap("bc", pipeline.phase_bc, lambda a, k, r: config.policy.bc.steps)
    pipeline.phase_world_model = meter.wrap("wm", pipeline.phase_world_model, lambda a, k, r: wm_steps)
    MBPOTrainer.collect = meter.wrap("imagine", MBPOTrainer.collect, lambda a, k, r: r.num_branches)
    ratio: dict[str, float] = {}
    PPOUpdater.update = meter.wrap("ppo", first_ppo_ratio(ratio), lambda a, k, r: len(k.get("observations", ())))
    episodes = load_episodes(dataset, config.view_names)
    observations = [Observation({v: e.views[v][t] for v in config.view_names}, e.states[t], e.instruction,
                                view_order=tuple(config.view_names)) for e, t in ((episodes[0], 0), (episodes[1], 5))]
    probe = ObsBatch.from_observations(observations)
    saved_chunks: list[np.ndarray] = []  # the chunk of every policy the loop saved, in order
    original_save = LeRobotFlowPolicy.save

    def save(self: LeRobotFlowPolicy, directory: Path) -> None:
        with torch.no_grad():
            saved_chunks.append(self.predict_chunks(probe))
        original_save(self, directory)
    LeRobotFlowPolicy.save = save

    run_dir = work / "run"
    results = [pipeline.run_iteration(run_dir, dataset, config) for _ in range(2)]
    metrics = {**results[0]["metrics"], **results[1]["metrics"]}
    figures["results"] = results
    meter.write()

    # --- the assertions
    problems: list[str] = []
    first = ratio.get("first_ratio_mean", float("nan"))
    if not abs(first - 1.0) < 1e-3:
        problems.append(f"first PPO minibatch ratio mean {first} is not within 1e-3 of 1")
    losses = {k: v for k, v in metrics.items() if k.endswith("_loss") or k.endswith(".bc_loss")}
    flat = [x for v in losses.values() for x in (v if isinstance(v, list) else [v]) if x is not None]
    if not flat or not np.all(np.isfinite(flat)):
        problems.append(f"non-finite or missing losses: {losses}")
    if not all(r["published"] for r in results):
        problems.append(f"an iteration did not publish: {[r.get('reason') for r in results]}")
    bc_dir, rl_dir = Path(results[0]["path"]), Path(results[1]["path"])
    expert = "lm_expert" if source_backend == "smolvla" else "gemma_expert"
    moved_policy = changed_tensors(bc_dir / "lerobot" / "model.safetensors", rl_dir / "lerobot" / "model.safetensors", expert)
    moved_wm = changed_tensors(snapshots["world_model"] / "model.safetensors",
                               run_dir / "iterations" / "0001" / "world_model" / "model.safetensors", "language_model")
    frozen_vlm = changed_tensors(bc_dir / "lerobot" / "model.safetensors", rl_dir / "lerobot" / "model.safetensors",
                                 "vlm_with_expert.vlm." if source_backend == "smolvla" else "paligemma.model.language_model")
    figures["weights_changed"] = {"policy_expert_tensors": moved_policy, "world_model_llm_tensors": moved_wm,
                                  "policy_vlm_tensors": frozen_vlm}
    if not moved_policy or not moved_wm:
        problems.append(f"trained weights did not change: {figures['weights_changed']}")
    if frozen_vlm:
        problems.append(f"RL changed {frozen_vlm} tensors of the frozen VLM")
    # The executor's path: sha256 + load from the trusted root, then the gate's check of its chunks.
    # (signed as the world-model node signs what it announces; the executor trusts only that key)
    keys_dir = work / "keys"
    private, public = ensure_key_pair(keys_dir)
    sign_checkpoint(rl_dir, results[1]["version"], load_private_key(private))
    candidate = load_candidate(results[1]["version"], str(rl_dir), results[1]["sha256"], [run_dir / "checkpoints"],
                               TrustedKeys.load([str(public)]))
    gate = SafetyGate(load_safety_config(REPO / "config" / "robots" / "so101.yaml"))
    gate_problems = validate_candidate(candidate, observations, gate)
    broken = [p for p in gate_problems if "limit" not in p and "outside" not in p]
    figures["executor_validation"] = {"problems": gate_problems, "structural": broken}
    if broken:
        problems.append(f"the published checkpoint fails the executor's validation: {broken}")
    with torch.no_grad():
        reloaded = candidate.predict_chunks(probe)
    expected = saved_chunks[-1] if saved_chunks else None  # the RL candidate, saved last
    reproduce_error = float(np.abs(reloaded - expected).max()) if expected is not None else float("nan")
    figures["reload_max_abs_error"] = reproduce_error
    if not reproduce_error <= 1e-4 * max(1.0, float(np.abs(expected).max())):
        problems.append(f"the reloaded checkpoint's chunk differs from the saved policy's by {reproduce_error}")
    figures.update(first_ppo_ratio_mean=first, losses=losses, problems=problems, ok=not problems,
                   total_seconds=time.perf_counter() - started, status="measured")
    meter.write()
    return figures


def summary_line(figures: dict[str, Any]) -> str:
    phases = figures.get("phases", {})
    peak = ",".join(f"{p}:{phases.get(p, {}).get('peak_gib', float('nan')):.2f}" for p in ("bc", "wm", "imagine", "ppo"))
    branches = phases.get("imagine", {}).get("items_per_s", float("nan"))
    scope = " (tiny, cpu: figures mean nothing; peak = process RSS)" if figures.get("tiny") else ""
    return (f"gpu_smoke: ok={str(figures.get('ok', False)).lower()} config={figures['config']} peak_gb={peak} "
            f"branches_per_s={branches:.2f}{scope}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--tiny", action="store_true", help="toy widths on the CPU (the code path, not figures)")
    parser.add_argument("--out", type=Path, default=Path("gpu_smoke.json"))
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not args.tiny and not torch.cuda.is_available():
        args.out.write_text(json.dumps({"config": str(args.config), "status": "not measured"}))
        print("gpu_smoke: not measured (no CUDA device on this machine)")
        return 2
    figures = run(args)
    for problem in figures["problems"]:
        log(f"FAILED: {problem}")
    print(summary_line(figures), flush=True)
    return 0 if figures["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
