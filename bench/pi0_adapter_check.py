"""One-off check of the pi0 / pi0.5 branch of ``LeRobotFlowPolicy`` at full size, on CPU, offline.

    . scripts/env.sh && nice -n 5 .venv/bin/python bench/pi0_adapter_check.py [--backend pi0|pi05] [--batch 2]

The unit tests (test/core/test_lerobot_adapter.py) reach the adapter only through a tiny SmolVLA: LeRobot's
PI0Config / PI05Config allow gemma_300m / gemma_2b only and a full SigLIP tower, about 4 B parameters in all.
This script builds that full-size policy once with random weights (``dtype="bfloat16"``; LeRobot keeps the
SigLIP tower, the projector, the norms and the action/state projections in float32) and checks:

1. LeRobot's own ``save_pretrained`` / processor pipelines, with a local word-level tokenizer standing in for
   PaliGemma's (not downloadable offline; its ids stay far below Gemma's 257152 embeddings), are loaded by
   ``LeRobotFlowPolicy.from_lerobot`` with the weights unchanged (per-tensor float64 sums);
2. ``predict_chunks`` (zero initial noise) matches LeRobot's own ``predict_action_chunk`` from the same noise:
   exactly for one Euler step (same prefix pass, same velocity), to bf16 rounding for ``--steps`` steps (the two
   Euler updates are algebraically equal but fp32 ulps apart, which the bf16 layers round to about one bf16
   ulp); ``predict_chunk`` on one observation equals that observation's row of the batch;
3. ``sample_chunks`` (Flow-SDE chain, one stochastic step per sample) returns finite log-probs and values, and
   its actions are the unnormalized last iterate;
4. ``evaluate_chains`` on the stored chain gives the sampled log-prob back, differentiably: its backward
   reaches the action expert and none of the frozen VLM;
5. ``value`` matches the sampled value; ``save`` + ``load_policy`` gives the same deterministic chunk.

Memory: LeRobot builds ``PaliGemmaWithExpertModel`` in float32 and casts it to bfloat16 at the end, and
transformers builds two throwaway float32 Gemma-2B language models on the way: an estimated 15 GiB or more for
these 4 B parameters (not run). ``bf16_backbone`` builds it in bfloat16 instead (same final dtype layout,
checked on the meta device first). A guard thread ends the run if anonymous memory passes ``--max-anon-gib``.
LeRobot memory-maps ``model.safetensors`` when loading, so the total RSS also counts up to one checkpoint
(8.3 GiB) of page cache.

Measured on 2026-11-25 (2-vCPU AVX-512-BF16 VM, 1 thread, nice 5, CI jobs running beside it):
- pi0, batch 2: PASS in 24 min. 3.61 B bf16 + 0.42 B fp32 parameters, 8.28 GiB. Build + save 445 s,
  ``from_lerobot`` 320 s, ``load_policy`` 343 s (each construction random-initializes all 4 B parameters
  before loading); one prefix pass + 3 denoising steps ~35 s for 2 observations (17 s for 1); ``sample_chunks``
  35 s, ``evaluate_chains`` + backward 39 s, ``value`` 33 s, ``save`` 12 s. Peak anonymous RSS 10.1 GiB
  (13.8 GiB when only the default dtype was switched, ``from_config`` left at float32); peak total RSS
  (``ru_maxrss``) 17.9 GiB, the surplus being the memory-mapped checkpoint while it loads.
- pi0.5 (``--backend pi05``), batch 2: PASS in 23 min. 3.61 B bf16 + 0.53 B fp32 parameters (adaRMS norms),
  8.71 GiB; step times within a few seconds of pi0's. Peak anonymous RSS 10.8 GiB, peak total RSS 18.9 GiB.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import resource
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Iterator

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import torch

from vla_mbpo_ros.core.data.episode import Observation
from vla_mbpo_ros.core.policy.base import ObsBatch, load_policy
from vla_mbpo_ros.core.policy.flow_sde import FlowSDEConfig
from vla_mbpo_ros.core.policy.lerobot_adapter import LeRobotFlowConfig, LeRobotFlowPolicy

VIEWS = ("head", "wrist")
STATE_DIM = ACTION_DIM = 6
INSTRUCTION = "pick up the red cube"
GIB = 2**30


# ----------------------------------------------------------------------------- memory and timing
def _status_gib(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024 / GIB
    return 0.0


class MemoryGuard:
    """Samples anonymous RSS every 0.2 s, keeps its peak, and ends the process above ``limit_gib``."""

    def __init__(self, limit_gib: float) -> None:
        self.limit_gib, self.peak_anon_gib = limit_gib, 0.0
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        while True:
            anon = _status_gib("RssAnon")
            self.peak_anon_gib = max(self.peak_anon_gib, anon)
            if anon > self.limit_gib:
                print(f"ABORT: anonymous RSS {anon:.2f} GiB > limit {self.limit_gib} GiB", flush=True)
                print("FAIL (memory limit)", flush=True)
                os._exit(3)
            time.sleep(0.2)

    def line(self) -> str:
        peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB  # ru_maxrss is in KiB
        return (f"rss {_status_gib('VmRSS'):.2f} GiB (anon {_status_gib('RssAnon'):.2f}) | "
                f"peak rss {peak_rss:.2f} GiB, peak anon {self.peak_anon_gib:.2f} GiB")


@contextlib.contextmanager
def step(name: str, guard: MemoryGuard, timings: dict[str, float]) -> Iterator[None]:
    print(f"--- {name}", flush=True)
    started = time.perf_counter()
    yield
    timings[name] = time.perf_counter() - started
    print(f"    {name}: {timings[name]:.1f} s | {guard.line()}", flush=True)


# ----------------------------------------------------------------------------- building the LeRobot policy
def lerobot_modules(backend: str) -> tuple[Any, Any, Any, Any]:
    """(config class, policy class, processor module, modeling module) of a backend."""
    if backend == "pi0":
        from lerobot.policies.pi0 import modeling_pi0 as modeling
        from lerobot.policies.pi0 import processor_pi0 as processor
        from lerobot.policies.pi0.configuration_pi0 import PI0Config as config_cls

        return config_cls, modeling.PI0Policy, processor, modeling
    from lerobot.policies.pi05 import modeling_pi05 as modeling
    from lerobot.policies.pi05 import processor_pi05 as processor
    from lerobot.policies.pi05.configuration_pi05 import PI05Config as config_cls

    return config_cls, modeling.PI05Policy, processor, modeling


def make_config(args: argparse.Namespace) -> Any:
    from lerobot.configs import FeatureType, PolicyFeature

    config_cls = lerobot_modules(args.backend)[0]
    size = args.image_size
    features = {f"observation.images.{v}": PolicyFeature(FeatureType.VISUAL, (3, size, size)) for v in VIEWS}
    features["observation.state"] = PolicyFeature(FeatureType.STATE, (STATE_DIM,))
    return config_cls(
        dtype="bfloat16", input_features=features,
        output_features={"action": PolicyFeature(FeatureType.ACTION, (ACTION_DIM,))},
        chunk_size=args.chunk, n_action_steps=args.executed, num_inference_steps=args.steps,
        image_resolution=(size, size), tokenizer_max_length=args.max_tokens, device="cpu")


@contextlib.contextmanager
def bf16_backbone(modeling: Any) -> Iterator[None]:
    """Build ``PaliGemmaWithExpertModel`` in bfloat16 instead of float32-then-cast.

    LeRobot builds it in float32 and casts at the end; on the way, transformers' ``AutoModel.from_config`` also
    builds two throwaway Gemma-2B language models (PaliGemma's own, replaced by LeRobot's PiGemma) in the
    config's float32. Here the default dtype is bfloat16 and ``from_config`` follows it; LeRobot's final cast
    then puts SigLIP, the projector and the norms back in float32 (``same_layout_as_lerobot`` checks the result).
    """
    from transformers import AutoModel

    original_init, original_from_config = modeling.PaliGemmaWithExpertModel.__init__, AutoModel.__dict__["from_config"]

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        previous = torch.get_default_dtype()
        torch.set_default_dtype(torch.bfloat16)
        try:
            original_init(self, *args, **kwargs)
        finally:
            torch.set_default_dtype(previous)

    def from_config(cls: Any, config: Any, **kwargs: Any) -> Any:
        return original_from_config.__func__(cls, config, **{"dtype": torch.get_default_dtype(), **kwargs})

    modeling.PaliGemmaWithExpertModel.__init__ = init
    AutoModel.from_config = classmethod(from_config)
    try:
        yield
    finally:
        modeling.PaliGemmaWithExpertModel.__init__ = original_init
        AutoModel.from_config = original_from_config


def same_layout_as_lerobot(args: argparse.Namespace) -> bool:
    """On the meta device: the bf16-built policy has LeRobot's own parameter/buffer dtypes and shapes."""
    _, policy_cls, _, modeling = lerobot_modules(args.backend)

    def layout(policy: torch.nn.Module) -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
        return {n: (t.dtype, tuple(t.shape)) for n, t in [*policy.named_parameters(), *policy.named_buffers()]}

    config = make_config(args)
    config.device = "meta"  # after validation, which knows cpu/cuda/mps/xpu only
    with torch.device("meta"):
        reference = layout(policy_cls(config))
        with bf16_backbone(modeling):
            patched = layout(policy_cls(config))
    return reference == patched


def save_word_tokenizer(directory: Path) -> Path:
    """A word-level stand-in for PaliGemma's tokenizer: the prompt words, pi0.5's state bins and punctuation."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "<unk>", "<bos>", "<eos>", *INSTRUCTION.split(), "Task", "State", "Action", ":", ",", ";",
             *map(str, range(256))]
    vocab = {word: i for i, word in enumerate(dict.fromkeys(words))}
    word_level = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    word_level.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=word_level, pad_token="<pad>", unk_token="<unk>", bos_token="<bos>",
                            eos_token="<eos>").save_pretrained(directory)
    return directory


@contextlib.contextmanager
def local_tokenizer(processor_module: Any, tokenizer_dir: Path) -> Iterator[None]:
    """The pipeline factory names google/paligemma-3b-pt-224; point its tokenizer step at a local copy."""
    original = processor_module.TokenizerProcessorStep
    processor_module.TokenizerProcessorStep = lambda **kw: original(**{**kw, "tokenizer_name": str(tokenizer_dir)})
    try:
        yield
    finally:
        processor_module.TokenizerProcessorStep = original


def dataset_stats() -> dict[str, dict[str, torch.Tensor]]:
    """Fake stats with mean/std (pi0) and q01/q99 (pi0.5) for state and action."""
    stats = {}
    for key, dim in (("observation.state", STATE_DIM), ("action", ACTION_DIM)):
        mean = torch.linspace(-1.0, 1.0, dim)
        stats[key] = {"mean": mean, "std": torch.full((dim,), 0.5), "q01": mean - 1.0, "q99": mean + 1.0,
                      "min": mean - 1.5, "max": mean + 1.5}
    return stats


def fingerprint(module: torch.nn.Module) -> dict[str, float]:
    """Per-tensor float64 sums, in 16 M-element pieces (a whole-tensor float64 upcast of the 527 M-entry
    embedding would take 4 GiB)."""
    return {name: sum(float(torch.sum(piece, dtype=torch.float64)) for piece in p.detach().reshape(-1).split(1 << 24))
            for name, p in module.named_parameters()}


def build_lerobot_dir(root: Path, args: argparse.Namespace) -> tuple[Path, Path, dict[str, float]]:
    """Random-weight policy + processor pipelines saved the way ``from_lerobot`` reads them."""
    from lerobot.policies.factory import make_pre_post_processors

    _, policy_cls, processor_module, modeling = lerobot_modules(args.backend)
    config = make_config(args)
    torch.manual_seed(0)
    with bf16_backbone(modeling):
        policy = policy_cls(config)
    by_dtype: dict[torch.dtype, int] = {}
    for p in policy.parameters():
        by_dtype[p.dtype] = by_dtype.get(p.dtype, 0) + p.numel()
    print("    parameters: " + ", ".join(f"{dtype}: {n / 1e9:.3f} B" for dtype, n in by_dtype.items())
          + f"; {sum(p.numel() * p.element_size() for p in policy.parameters()) / GIB:.2f} GiB", flush=True)
    tokenizer_dir = save_word_tokenizer(root / "tokenizer")
    with local_tokenizer(processor_module, tokenizer_dir):
        preprocessor, postprocessor = make_pre_post_processors(config, dataset_stats=dataset_stats())
    lerobot_dir = root / "lerobot"
    policy.save_pretrained(lerobot_dir)
    preprocessor.save_pretrained(lerobot_dir, config_filename="policy_preprocessor.json")
    postprocessor.save_pretrained(lerobot_dir, config_filename="policy_postprocessor.json")
    return lerobot_dir, tokenizer_dir, fingerprint(policy)


def obs_batch(size: int, image_size: int, seed: int = 0) -> ObsBatch:
    rng = np.random.default_rng(seed)
    return ObsBatch(views={v: rng.integers(0, 256, (size, image_size, image_size, 3), dtype=np.uint8) for v in VIEWS},
                    states=rng.normal(size=(size, STATE_DIM)).astype(np.float32), instructions=[INSTRUCTION] * size)


def lerobot_chunks(adapter: LeRobotFlowPolicy, batch: ObsBatch, num_steps: int) -> np.ndarray:
    """LeRobot's own sampling loop from zero noise, unnormalized executed steps: the reference chunks."""
    noise = torch.zeros(len(batch), adapter.model_chunk, adapter.padded_action_dim)
    actions = adapter.lerobot.predict_action_chunk(adapter._lerobot_batch(batch), noise=noise, num_steps=num_steps)
    return adapter.postprocessor(actions[:, : adapter.chunk_size].float()).numpy()


# ----------------------------------------------------------------------------- the check
def run(args: argparse.Namespace, root: Path, guard: MemoryGuard, check: Any) -> dict[str, float]:
    timings: dict[str, float] = {}
    modeling = lerobot_modules(args.backend)[3]
    with step("layout check (meta device)", guard, timings):
        check(same_layout_as_lerobot(args), "bf16-built backbone has LeRobot's dtype layout")
    with step("build random policy + processors, save", guard, timings):
        lerobot_dir, tokenizer_dir, weights = build_lerobot_dir(root, args)
    gc.collect()

    with step("LeRobotFlowPolicy.from_lerobot", guard, timings):
        torch.manual_seed(1)  # value head
        # inference_steps 0 would mean the Flow-SDE K (the chain RL optimises); the reference comparison
        # below runs LeRobot's own loop with --steps, so the deterministic steps are set explicitly.
        adapter_config = LeRobotFlowConfig(inference_steps=args.steps,
                                           sde=FlowSDEConfig(num_steps=args.sde_steps, noise_level=0.5))
        with bf16_backbone(modeling):
            adapter = LeRobotFlowPolicy.from_lerobot(lerobot_dir, adapter_config, tokenizer_dir=tokenizer_dir)
    loaded = fingerprint(adapter.lerobot)
    changed = [n for n in weights if loaded.get(n) != weights[n]]
    check(not changed and loaded.keys() == weights.keys(), f"weights unchanged by save/load ({changed[:3]})")
    check(adapter.backend == args.backend and adapter.view_names == VIEWS, "backend and views")
    check((adapter.chunk_size, adapter.action_dim, adapter.inference_steps) == (args.executed, ACTION_DIM, args.steps),
          "chunk size, action dim (from the LeRobot config), inference steps (--steps)")
    language_model = adapter.lerobot.model.paligemma_with_expert.paligemma.model.language_model
    check(language_model.layers[0].self_attn.q_proj.weight.dtype == torch.bfloat16, "backbone in bfloat16")

    batch = obs_batch(args.batch, args.image_size)
    with step(f"predict_chunks (B={args.batch})", guard, timings):
        chunks = adapter.predict_chunks(batch)
    check(chunks.shape == (args.batch, args.executed, ACTION_DIM) and np.isfinite(chunks).all(),
          f"deterministic chunks shape {chunks.shape}, finite")
    with step(f"LeRobot predict_action_chunk, same zero noise, {args.steps} steps (reference)", guard, timings):
        reference = lerobot_chunks(adapter, batch, args.steps)
    # LeRobot steps x + dt v, flow_sde the algebraically equal x0_hat (1 - t') + x1_hat t': fp32 ulps apart,
    # which the bf16 layers of the next velocity call round to about one bf16 ulp (2^-8 relative).
    diff, scale = float(np.abs(chunks - reference).max()), max(1.0, float(np.abs(reference).max()))
    check(diff < 2e-2 * scale, f"predict_chunks ~ LeRobot's own sampling, {args.steps} steps (max |diff| {diff:.2e})")
    with step("predict_chunks and LeRobot's, 1 step (same arithmetic: -v)", guard, timings):
        adapter.inference_steps, steps = 1, adapter.inference_steps
        one_step = adapter.predict_chunks(batch)
        adapter.inference_steps = steps
        reference = lerobot_chunks(adapter, batch, 1)
    diff = float(np.abs(one_step - reference).max())
    check(diff < 1e-6, f"1-step chunk == LeRobot's: same prefix pass and velocity (max |diff| {diff:.2e})")
    with step("predict_chunk (one observation)", guard, timings):
        obs = Observation(views={v: batch.views[v][0] for v in VIEWS}, state=batch.states[0], instruction=INSTRUCTION)
        single = adapter.predict_chunk(obs)
    diff = float(np.abs(single - chunks[0]).max())
    scale = max(1.0, float(np.abs(chunks).max()))
    check(single.shape == (args.executed, ACTION_DIM) and diff < 5e-2 * scale,
          f"predict_chunk == row 0 of the batch (max |diff| {diff:.2e}, scale {scale:.2f}; bf16 GEMMs may "
          "round differently with batch size)")

    with step("sample_chunks (Flow-SDE)", guard, timings):
        # Seed 3 draws different stochastic steps for the two rows of the default batch (0 and 2).
        sample = adapter.sample_chunks(batch, torch.Generator().manual_seed(3))
    check(sample.chain.shape == (args.batch, args.sde_steps + 1, args.chunk, adapter.padded_action_dim),
          f"chain shape {tuple(sample.chain.shape)}")
    check(bool(torch.isfinite(sample.log_prob).all() and torch.isfinite(sample.value).all())
          and sample.value.shape == (args.batch,), f"finite log-prob {sample.log_prob.tolist()} and value")
    check(np.allclose(sample.actions, adapter._unnormalize(sample.chain[:, -1]), atol=1e-6),
          "actions are the unnormalized last iterate")
    print(f"    denoise_index {sample.denoise_index.tolist()}, log_prob {sample.log_prob.tolist()}")

    with step("evaluate_chains + backward", guard, timings):
        log_prob, value = adapter.evaluate_chains(batch, sample.chain, sample.denoise_index)
        log_prob.sum().backward()
    diff = float((log_prob.detach() - sample.log_prob).abs().max())
    tolerance = 1e-3 + 1e-5 * float(sample.log_prob.abs().max())  # as the SmolVLA test
    check(diff <= tolerance, f"evaluated log-prob == sampled (max |diff| {diff:.2e})")
    check(torch.allclose(value.detach(), sample.value), "evaluated value == sampled")
    actor = {id(p) for p in adapter.actor_parameters()}
    with_grad = [p for p in adapter.parameters() if p.grad is not None]
    vlm = list(adapter.lerobot.model.paligemma_with_expert.paligemma.parameters())
    grad_norm = float(torch.sqrt(sum(torch.sum(p.grad.float() ** 2) for p in with_grad)))
    check(log_prob.requires_grad and bool(with_grad) and all(id(p) in actor for p in with_grad)
          and all(p.grad is None for p in vlm) and np.isfinite(grad_norm) and grad_norm > 0,
          f"gradient reaches {len(with_grad)} actor tensors (norm {grad_norm:.3e}), none of the VLM")
    adapter.zero_grad(set_to_none=True)
    del log_prob, value, with_grad

    with step("value", guard, timings):
        values = adapter.value(batch)
    check(torch.allclose(values.detach(), sample.value), f"value == sampled value ({values.tolist()})")

    with step("save", guard, timings):
        adapter.version = "3"
        adapter.save(root / "ckpt")
    files = sorted(p.relative_to(root / "ckpt").as_posix() for p in (root / "ckpt").rglob("*") if p.is_file())
    check({"config.json", "model.safetensors", "lerobot/model.safetensors", "tokenizer/tokenizer.json"} <= set(files)
          and not any(f.endswith((".bin", ".pt", ".pkl")) for f in files), f"checkpoint files {files}")
    value_head = {k: v.clone() for k, v in adapter.value_head.state_dict().items()}
    del adapter, language_model, vlm
    gc.collect()
    with step("load_policy", guard, timings), bf16_backbone(modeling):
        reloaded = load_policy(root / "ckpt")
    check(isinstance(reloaded, LeRobotFlowPolicy) and reloaded.version == "3", "load_policy dispatches, version")
    check(all(torch.equal(value_head[k], v) for k, v in reloaded.value_head.state_dict().items()), "value head")
    with step("predict_chunks after reload", guard, timings):
        again = reloaded.predict_chunks(batch)
    diff = float(np.abs(again - chunks).max())
    check(diff < 1e-6, f"reloaded deterministic chunk == original (max |diff| {diff:.2e})")
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=("pi0", "pi05"), default="pi0")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--chunk", type=int, default=10, help="chunk_size (actions denoised)")
    parser.add_argument("--executed", type=int, default=8, help="n_action_steps (actions executed)")
    parser.add_argument("--steps", type=int, default=3, help="deterministic denoising steps")
    parser.add_argument("--sde-steps", type=int, default=3, help="Flow-SDE steps K")
    parser.add_argument("--max-tokens", type=int, default=48, help="tokenizer_max_length")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-anon-gib", type=float, default=14.0)
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary directory, removed")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    guard = MemoryGuard(args.max_anon_gib)
    failures: list[str] = []

    def check(ok: bool, what: str) -> None:
        print(f"    [{'ok' if ok else 'FAILED'}] {what}", flush=True)
        if not ok:
            failures.append(what)

    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        root = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pi0_check_")))
        try:
            timings = run(args, root, guard, check)
            print("timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
        except Exception:  # report, then FAIL
            traceback.print_exc()
            failures.append("exception")
    print(f"total {time.perf_counter() - started:.1f} s | {guard.line()}")
    print(f"{'PASS' if not failures else 'FAIL'} ({args.backend}, batch {args.batch}): "
          f"{len(failures)} failed check(s){': ' + '; '.join(failures) if failures else ''}", flush=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
