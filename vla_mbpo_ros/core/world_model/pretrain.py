"""Pretrain the tiny UMM on the simulated play corpus, once, so the loop finetunes a pretrained model.

The paper finetunes a pretrained Janus-Pro on a few hundred robot episodes; no weights can be downloaded
here, so the project pretrains its own tiny one on the sim (``core/sim/play.py``), with the same recording
code path as real episodes. Three resumable stages under ``--out``:

1. ``corpus/``: the play corpus (a LeRobotDataset; episodes already saved are kept);
2. ``model/``: VQ tokenizer fit, then world-model training with a resumable checkpoint every
   ``train.save_every`` steps (``model/resume``);
3. held-out evaluation (dynamics PSNR/SSIM against copy-the-frame and VQ-reconstruction references, reward
   precision/recall with the P(Yes) threshold calibrated on a separate held-out half), written with the
   sha256 of every model file and the corpus seed into ``model/pretrain_manifest.json`` - last, so a
   directory with a manifest is a finished one.

    python -m vla_mbpo_ros.core.world_model.pretrain [--config config/world_model_pretrain.yaml] [--out DIR]
    make world-model                                      # the same, into ~/.cache/vla_mbpo_ros/umm_sim
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml

from vla_mbpo_ros.core.data.episode import Episode
from vla_mbpo_ros.core.sim.play import BEHAVIOURS, PlayConfig
from vla_mbpo_ros.core.util.config import load_config
from vla_mbpo_ros.core.world_model.configuration import WORLD_MODEL_CONFIG_FILE, TinyArchConfig, WorldModelConfig
from vla_mbpo_ros.core.world_model.data import DataConfig, action_stats, build_samples
from vla_mbpo_ros.core.world_model.train import TrainConfig, train_world_model

DEFAULT_OUTPUT = "~/.cache/vla_mbpo_ros/umm_sim"
MANIFEST = "pretrain_manifest.json"
VIEW_NAMES = ("head", "wrist")
MAX_CORPUS_WORKERS = 2


@dataclass
class PretrainConfig:
    corpus: PlayConfig = field(default_factory=PlayConfig)
    tiny: TinyArchConfig = field(default_factory=TinyArchConfig)
    world_model: WorldModelConfig = field(default_factory=lambda: WorldModelConfig(view_names=VIEW_NAMES))
    # margin 0: the corpus records the success frames (play.py), so every frame has an exact label
    data: DataConfig = field(default_factory=lambda: DataConfig(reward_no_margin=0, yes_oversample=3))
    train: TrainConfig = field(default_factory=TrainConfig)
    holdout_episodes: int = 30  # half calibrates the reward threshold, half measures it
    min_reward_precision: float = 0.95  # calibration target on the calibration half
    eval_samples: int = 384
    torch_threads: int = 0  # 0: all cores
    # Processes that play and render the corpus while this one writes it (-1: one per core but one, at most
    # MAX_CORPUS_WORKERS; 0: play here). The episodes are the same either way: each is seeded by its index.
    corpus_workers: int = -1

    def __post_init__(self) -> None:
        if not 2 <= self.holdout_episodes < self.corpus.episodes:
            raise ValueError(f"holdout_episodes must be in [2, corpus.episodes), got {self.holdout_episodes}")
        if not 0.0 < self.min_reward_precision <= 1.0:
            raise ValueError(f"min_reward_precision must be in (0, 1], got {self.min_reward_precision}")
        if self.corpus_workers < -1:
            raise ValueError(f"corpus_workers must be -1 (one per core but one), 0 (none) or more, got {self.corpus_workers}")
        if self.world_model.view_names != VIEW_NAMES:
            raise ValueError(f"world_model.view_names: the sim corpus has {VIEW_NAMES}")


def corpus_workers(configured: int) -> int:
    """``PretrainConfig.corpus_workers`` resolved: -1 is one per core but the writer's, at most
    MAX_CORPUS_WORKERS (measured on 2 cores: 2 workers barely faster than 1, the writer's encoding is the
    bottleneck)."""
    if configured >= 0:
        return configured
    return max(0, min(MAX_CORPUS_WORKERS, (os.cpu_count() or 1) - 1))


def load_pretrain_config(path: str | Path | None) -> PretrainConfig:
    data = yaml.safe_load(Path(path).read_text()) if path else {}
    config = load_config(PretrainConfig, data or {}, "pretrain")
    return config


def file_digests(directory: Path) -> dict[str, str]:
    """sha256 of every file of a saved model (not the manifest, not a leftover resume checkpoint)."""
    digests = {}
    for file in sorted(p for p in directory.iterdir() if p.is_file() and p.name != MANIFEST):
        digests[file.name] = hashlib.sha256(file.read_bytes()).hexdigest()
    return digests


def verify_pretrained(directory: str | Path) -> dict:
    """The manifest of a finished pretraining, after checking every file's sha256 (ValueError if not)."""
    directory = Path(directory).expanduser()
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(
            f"{directory} holds no finished pretraining ({MANIFEST} missing): build it with `make world-model`")
    manifest = json.loads(manifest_path.read_text())
    actual = file_digests(directory)
    changed = sorted(n for n, digest in manifest["sha256"].items() if actual.get(n) != digest)
    if changed:
        raise ValueError(f"{directory}: {changed} do not match their sha256 in {MANIFEST}; rebuild with "
                         "`make world-model` (delete the directory first)")
    return manifest


def split_holdout(episodes: list[Episode], holdout: int) -> tuple[list[Episode], list[Episode], list[Episode]]:
    """(train, calibration, test): the last ``holdout`` episodes are held out, alternately to each half."""
    held = episodes[-holdout:]
    return episodes[:-holdout], held[0::2], held[1::2]


def evaluate_pretrained(model, calibration: list[Episode], test: list[Episode], config: PretrainConfig) -> dict:
    """Dynamics figures on the test half; reward threshold from the calibration half, scored on the test half."""
    from vla_mbpo_ros.core.world_model.evaluate import (
        EvalConfig,
        auroc,
        calibrate_threshold,
        classification_scores,
        evaluate_dynamics,
        reference_scores,
        success_probabilities,
    )

    eval_config = EvalConfig(batch_size=32, max_samples=config.eval_samples)
    dynamics, reward = build_samples(test, model.view_names, dataclasses.replace(config.data, yes_oversample=1),
                                      model.config.reward_from)
    _, calibration_reward = build_samples(calibration, model.view_names,
                                          dataclasses.replace(config.data, yes_oversample=1), model.config.reward_from)
    figures = {"dynamics": evaluate_dynamics(model, dynamics, eval_config),
               "references": reference_scores(model, dynamics, eval_config)}
    probability, truth = success_probabilities(model, calibration_reward, dataclasses.replace(eval_config, max_samples=10**6))
    threshold = calibrate_threshold(probability, truth, config.min_reward_precision)
    model.core.config.reward_threshold = threshold
    probability, truth = success_probabilities(model, reward, dataclasses.replace(eval_config, max_samples=10**6))
    figures["reward"] = {"threshold": threshold, **classification_scores(probability > threshold, truth),
                         "auroc": auroc(probability, truth),
                         "at_0.5": classification_scores(probability > 0.5, truth)}
    return figures


def corpus_progress(bar):
    """The play corpus's progress callback: one display of ``bar`` (a tqdm) per recorded episode.
    (``set_postfix`` displays by itself unless told not to: followed by a refresh, every line came twice.)"""

    def advance(done: int, total: int, behaviour: str, success: bool) -> None:
        bar.set_postfix(behaviour=behaviour, success=success, refresh=False)
        bar.update(done - bar.n)

    return advance


def pretrain(config: PretrainConfig, out: str | Path, progress: bool = True) -> dict:
    """Run (or resume) the three stages; returns the manifest."""
    from tqdm.auto import tqdm

    from vla_mbpo_ros.core.data.reader import load_episodes
    from vla_mbpo_ros.core.sim.play import record_play_corpus
    from vla_mbpo_ros.core.world_model.umm import UMMWorldModel

    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    seconds = {}
    began = time.perf_counter()
    with tqdm(total=config.corpus.episodes, desc="play corpus", unit="episode", disable=not progress) as bar:
        store = record_play_corpus(out / "corpus", config.corpus, progress=corpus_progress(bar),
                                   workers=corpus_workers(config.corpus_workers))
        bar.update(store.num_episodes - bar.n)
    seconds["corpus"] = time.perf_counter() - began

    began = time.perf_counter()
    episodes = load_episodes(out / "corpus", VIEW_NAMES, config.tiny.image_size, "local/play")
    seconds["read"] = time.perf_counter() - began
    train_eps, calibration, test = split_holdout(episodes, config.holdout_episodes)
    model = UMMWorldModel.tiny(VIEW_NAMES, action_stats(train_eps), config.tiny.image_size, config.train.seed,
                               arch=config.tiny, config=config.world_model,
                               instructions=[config.corpus.instruction])
    dynamics, reward = build_samples(train_eps, VIEW_NAMES, config.data, model.config.reward_from)
    began = time.perf_counter()
    if (out / "model" / WORLD_MODEL_CONFIG_FILE).is_file():  # trained; stopped before the manifest was written
        model = UMMWorldModel.from_pretrained(out / "model")
        history = None
    else:
        history = train_world_model(model, dynamics, reward, config.train, output_dir=out / "model", progress=progress)
    seconds["train"] = time.perf_counter() - began

    began = time.perf_counter()
    figures = evaluate_pretrained(model, calibration, test, config)
    model.save_pretrained(out / "model")  # again: the calibrated reward threshold is part of the config
    seconds["evaluate"] = time.perf_counter() - began
    manifest = {
        "corpus": {"seed_base": config.corpus.seed_base, "episodes": len(episodes),
                   "successes": int(sum(bool(e.success) for e in episodes)),
                   "frames": int(sum(len(e) for e in episodes)),
                   "behaviours": dict(zip(BEHAVIOURS, np.bincount(
                       [BEHAVIOURS.index(config.corpus.behaviour(i)) for i in range(len(episodes))],
                       minlength=len(BEHAVIOURS)).tolist())),
                   "held_out": {"calibration": len(calibration), "test": len(test)}},
        "parameters": model.num_parameters(),
        "config": json.loads(json.dumps(dataclasses.asdict(config), default=list)),
        "train": _train_summary(config.train, history),
        "evaluation": figures,
        "seconds": seconds,
        "sha256": file_digests(out / "model"),
    }
    (out / "model" / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest


def _train_summary(config: TrainConfig, history) -> dict:
    if history is None:
        return {"steps": config.steps, "note": "trained by an earlier run"}

    def last(values: list[float]) -> float | None:
        return float(np.mean(values[-50:])) if values else None

    return {"steps": config.steps, "resumed_at": history.resumed_at, "image_loss_last": last(history.image_loss),
            "answer_loss_last": last(history.answer_loss), "vq_recon_loss_last": last(history.vq_recon_loss)}


def summary_line(manifest: dict) -> str:
    figures = manifest["evaluation"]
    dyn, ref, rew = figures["dynamics"], figures["references"], figures["reward"]
    views = " ".join(f"{v} {dyn[v]['psnr']:.2f}/{ref[v]['copy_psnr']:.2f}/{ref[v]['vq_psnr']:.2f}dB"
                     for v in manifest["config"]["world_model"]["view_names"])
    return (f"pretrain: psnr(model/copy/vq) {views} reward_threshold={rew['threshold']:.3f} "
            f"precision={rew['precision']:.2f} recall={rew['recall']:.2f} auroc={rew.get('auroc', float('nan')):.2f} "
            f"minutes={sum(manifest['seconds'].values()) / 60:.1f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="config/world_model_pretrain.yaml")
    parser.add_argument("--out", default=os.environ.get("VLA_MBPO_WORLD_MODEL_DIR", DEFAULT_OUTPUT))
    args = parser.parse_args(argv)
    out = Path(args.out).expanduser()
    config = load_pretrain_config(args.config)
    try:
        manifest = verify_pretrained(out / "model")
    except FileNotFoundError:
        manifest = None
    if manifest is not None and (changed := changed_sections(manifest, config)):
        if "corpus" in changed:
            raise SystemExit(f"{out}: the corpus section of {args.config} differs from the one this model was built "
                             "from; delete the directory to rebuild the corpus and the model")
        print(f"{out / 'model'} was built from another config ({', '.join(changed)}): rebuilding the model "
              "(the corpus is kept)")
        shutil.rmtree(out / "model")
        manifest = None
    if manifest is None:
        manifest = pretrain(config, out)
    else:
        print(f"{out / 'model'} is built and verified (delete it to rebuild)")
    print(summary_line(manifest))


def changed_sections(manifest: dict, config: PretrainConfig) -> list[str]:
    """Top-level sections of ``config`` that differ from the ones the finished model was built from (not
    ``torch_threads`` or ``corpus_workers``, which change nothing it learns, nor the reward threshold, which
    the pretraining calibrates)."""
    def plain(c: dict) -> dict:
        c = json.loads(json.dumps(c, default=list))
        c.get("world_model", {}).pop("reward_threshold", None)
        return c

    wanted, defaults = plain(dataclasses.asdict(config)), plain(dataclasses.asdict(PretrainConfig()))
    built = _with_defaults(plain(manifest.get("config", {})), defaults)
    return sorted(k for k, v in wanted.items() if k not in ("torch_threads", "corpus_workers") and built.get(k) != v)


def _with_defaults(built, defaults):
    """``built`` with the fields it lacks (added to the config since it was built, so built with their
    default) taken from ``defaults``."""
    if isinstance(built, dict) and isinstance(defaults, dict):
        return {k: _with_defaults(built[k], v) if k in built else v for k, v in defaults.items()}
    return built


if __name__ == "__main__":
    main()
