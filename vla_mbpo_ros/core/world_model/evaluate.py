"""World-model evaluation: per-view PSNR/SSIM of predicted vs real frames k steps ahead, reward
accuracy/precision/recall/AUROC, generation time per branch; and real-vs-predicted side-by-side PNGs.

    python -m vla_mbpo_ros.core.world_model.evaluate --checkpoint CKPT --dataset-root DATA \\
        --config config/world_model.yaml --out EVAL_DIR

The held-out episodes are those ``train.py`` left out (same seed, same ``holdout_episodes``).
Metrics are computed at the model's image size (frames are resized to it when read).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from vla_mbpo_ros.core.util.images import resize_uint8
from vla_mbpo_ros.core.world_model.data import DataConfig, DynamicsSamples, RewardSamples, build_samples
from vla_mbpo_ros.core.world_model.umm import UMMWorldModel


@dataclass
class EvalConfig:
    batch_size: int = 16
    max_samples: int = 256  # per metric, evenly spaced over the held-out samples
    side_by_side_rows: int = 8

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_samples", "side_by_side_rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


def psnr(predicted: np.ndarray, real: np.ndarray) -> np.ndarray:
    """Per-image PSNR in dB of (N,H,W,3) uint8 arrays (capped at 100 dB for identical images)."""
    diff = predicted.astype(np.float64) - real.astype(np.float64)
    mse = (diff**2).reshape(len(diff), -1).mean(axis=1)
    return np.where(mse > 0, 10 * np.log10(255.0**2 / np.maximum(mse, 1e-12)), 100.0)


def ssim(predicted: np.ndarray, real: np.ndarray, window: int = 7, sigma: float = 1.5) -> np.ndarray:
    """Per-image SSIM of (N,H,W,3) uint8 arrays: Gaussian window, per channel, averaged.

    The window (7 instead of the usual 11) fits the small frames of the CPU model; it is clipped to
    the image size.
    """
    x = torch.from_numpy(predicted).permute(0, 3, 1, 2).double()
    y = torch.from_numpy(real).permute(0, 3, 1, 2).double()
    size = min(window, x.shape[-1], x.shape[-2])
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    kernel = (g[:, None] * g[None, :] / g.sum() ** 2).expand(3, 1, size, size)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, kernel, groups=3)

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    value = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return value.mean(dim=(1, 2, 3)).numpy()


def _spread(n: int, limit: int) -> np.ndarray:
    return np.unique(np.linspace(0, n - 1, min(n, limit)).round().astype(int)) if n else np.zeros(0, int)


def _stack(dataset, indices: Sequence[int]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]:
    items = [dataset[int(i)] for i in indices]
    views = dataset.view_names
    current = {v: np.stack([it["current"][v].numpy() for it in items]) for v in views}
    following = {v: np.stack([it["next"][v].numpy() for it in items]) for v in views}
    return current, following, np.stack([it["actions"].numpy() for it in items])


def evaluate_dynamics(model: UMMWorldModel, dataset: DynamicsSamples, config: EvalConfig) -> dict:
    """Mean per-view PSNR/SSIM of predicted vs real views at t+k, and generation seconds per branch."""
    indices = _spread(len(dataset), config.max_samples)
    if len(indices) == 0:
        raise ValueError("no dynamics samples to evaluate")
    scores = {v: {"psnr": [], "ssim": []} for v in dataset.view_names}
    seconds = 0.0
    for start in range(0, len(indices), config.batch_size):
        current, following, chunks = _stack(dataset, indices[start : start + config.batch_size])
        began = time.perf_counter()
        predicted = model.predict(current, chunks)
        seconds += time.perf_counter() - began
        for v in dataset.view_names:
            scores[v]["psnr"].extend(psnr(predicted[v], following[v]).tolist())
            scores[v]["ssim"].extend(ssim(predicted[v], following[v]).tolist())
    result = {v: {m: float(np.mean(s)) for m, s in per.items()} for v, per in scores.items()}
    result["samples"] = int(len(indices))
    result["seconds_per_branch"] = seconds / len(indices)
    return result


def reference_scores(model: UMMWorldModel, dataset: DynamicsSamples, config: EvalConfig) -> dict:
    """Per view, the two references a prediction is read against: copying the current frame (no model at
    all) and the VQ reconstruction of the real target (the best any model with this tokenizer can do)."""
    indices = _spread(len(dataset), config.max_samples)
    scores = {v: {k: [] for k in ("copy_psnr", "copy_ssim", "vq_psnr", "vq_ssim")} for v in dataset.view_names}
    for start in range(0, len(indices), config.batch_size):
        current, following, _ = _stack(dataset, indices[start : start + config.batch_size])
        for v in dataset.view_names:
            target = following[v]
            with torch.no_grad():
                tokens = model.core.vq_encode(model.core.to_model_size(torch.from_numpy(target)))
                recon = resize_uint8(model.core.vq_decode(tokens), target.shape[1:3]).cpu().numpy()
            scores[v]["copy_psnr"].extend(psnr(current[v], target).tolist())
            scores[v]["copy_ssim"].extend(ssim(current[v], target).tolist())
            scores[v]["vq_psnr"].extend(psnr(recon, target).tolist())
            scores[v]["vq_ssim"].extend(ssim(recon, target).tolist())
    return {v: {k: float(np.mean(x)) for k, x in per.items()} for v, per in scores.items()}


def success_probabilities(model: UMMWorldModel, dataset: RewardSamples, config: EvalConfig) -> tuple[np.ndarray, np.ndarray]:
    """(P(Yes), label) of labelled head frames or transitions, evenly spread over the dataset (at most
    max_samples)."""
    indices = _spread(len(dataset), config.max_samples)
    probability, truth = [], []
    for start in range(0, len(indices), config.batch_size):
        items = [dataset[int(i)] for i in indices[start : start + config.batch_size]]
        instructions = [it["instruction"] for it in items]
        if "current" in items[0]:  # transitions (reward_from: transition)
            views = {v: np.stack([it["current"][v].numpy() for it in items]) for v in model.view_names}
            chunks = np.stack([it["actions"].numpy() for it in items])
            probability.extend(model.transition_success_probability(views, chunks, instructions).tolist())
        else:
            images = np.stack([it["image"].numpy() for it in items])
            probability.extend(model.success_probability(images, instructions).tolist())
        truth.extend(bool(it["success"]) for it in items)
    return np.array(probability, np.float32), np.array(truth, bool)


def classification_scores(predicted: np.ndarray, truth: np.ndarray) -> dict:
    """Accuracy, precision and recall of boolean predictions (nan where undefined)."""
    p, t = np.asarray(predicted, bool), np.asarray(truth, bool)
    tp = int((p & t).sum())
    return {
        "samples": int(len(t)),
        "positives": int(t.sum()),
        "accuracy": float((p == t).mean()) if len(t) else float("nan"),
        "precision": tp / int(p.sum()) if p.any() else float("nan"),
        "recall": tp / int(t.sum()) if t.any() else float("nan"),
    }


def auroc(score: np.ndarray, truth: np.ndarray) -> float:
    """Area under the ROC curve: the chance that a random positive scores above a random negative (ties
    count half; the Mann-Whitney U statistic over both counts), whatever the threshold; nan when a class
    is missing."""
    from scipy.stats import rankdata

    truth = np.asarray(truth, bool)
    positives, negatives = int(truth.sum()), int((~truth).sum())
    if not positives or not negatives:
        return float("nan")
    ranks = rankdata(np.asarray(score, np.float64))  # ties share their mean rank
    return float((ranks[truth].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def evaluate_reward(model: UMMWorldModel, dataset: RewardSamples, config: EvalConfig) -> dict:
    """Accuracy, precision and recall of the Yes/No answers (at the model's threshold) on labelled frames,
    and the AUROC of P(Yes) (how well it ranks them, at any threshold)."""
    probability, truth = success_probabilities(model, dataset, config)
    return {**classification_scores(probability > model.config.reward_threshold, truth), "auroc": auroc(probability, truth)}


def score_unseen_reward(model: UMMWorldModel, dataset: RewardSamples, recalibrate_to: float = 0.0,
                        batch_size: int = 32) -> dict:
    """The reward on every labelled frame of episodes the model has not trained on: precision, recall (at its
    threshold) and AUROC. With ``recalibrate_to`` > 0 the threshold is then moved to the highest recall at
    that precision on these frames, or where none reaches it to the most precise one (kept where a class is
    missing; :func:`calibrate_threshold`), for the rollouts that follow: the pretraining set it on its own
    corpus, not on what the current policy does."""
    probability, truth = success_probabilities(model, dataset, EvalConfig(batch_size=batch_size, max_samples=10**9))
    threshold = model.config.reward_threshold
    scores = {**classification_scores(probability > threshold, truth), "auroc": auroc(probability, truth)}
    if recalibrate_to > 0:
        model.config.reward_threshold = calibrate_threshold(probability, truth, recalibrate_to, fallback=threshold,
                                                            or_most_precise=True)
        scores["recalibrated_threshold"] = model.config.reward_threshold
    return scores


def calibrate_threshold(probability: np.ndarray, truth: np.ndarray, min_precision: float = 0.95,
                        fallback: float = 0.5, or_most_precise: bool = False) -> float:
    """The P(Yes) threshold with the highest recall among those whose precision is >= ``min_precision``
    (ties: the highest threshold). When none reaches it: with ``or_most_precise`` the threshold of the
    highest precision (ties: the highest recall, then threshold), else ``fallback``; ``fallback`` when a
    class is missing.

    Precision comes first: an imagined false success is a reward RL learns to reach.
    """
    probability, truth = np.asarray(probability, np.float64), np.asarray(truth, bool)
    if not truth.any() or truth.all():
        return fallback
    best, best_recall = fallback, -1.0
    most_precise, best_score = fallback, (-1.0, -1.0)
    for threshold in np.unique(np.concatenate([probability, [0.5]])):
        if not 0.0 < threshold < 1.0:
            continue
        yes = probability > threshold
        if not yes.any():
            continue
        precision = float((yes & truth).sum() / yes.sum())
        recall = float((yes & truth).sum() / truth.sum())
        if precision >= min_precision and recall >= best_recall:
            best, best_recall = float(threshold), recall
        if (precision, recall) >= best_score:
            most_precise, best_score = float(threshold), (precision, recall)
    return most_precise if best_recall < 0 and or_most_precise else best


def side_by_side(real: dict[str, np.ndarray], predicted: dict[str, np.ndarray], path: str | Path,
                 current: dict[str, np.ndarray] | None = None, rewards: np.ndarray | None = None,
                 title: str = "") -> Path:
    """A labelled PNG grid, one row per sample: for each view the current frame (when given), the real frame
    k steps later and the imagined one; the imagined reward (when given) names each row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    views = list(real)
    rows = len(real[views[0]])
    columns = [(v, kind) for v in views for kind in (("current", "real", "imagined") if current else ("real", "imagined"))]
    source = {"current": current or {}, "real": real, "imagined": predicted}
    headers = {"current": "{v}: now (t)", "real": "{v}: real (t+k)", "imagined": "{v}: imagined (t+k)"}
    fig, axes = plt.subplots(rows, len(columns), figsize=(1.45 * len(columns), 1.45 * rows + 0.6), squeeze=False)
    for r in range(rows):
        for c, (view, kind) in enumerate(columns):
            ax = axes[r, c]
            ax.imshow(source[kind][view][r], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if kind == "imagined":
                for spine in ax.spines.values():
                    spine.set_edgecolor("tab:orange")
                    spine.set_linewidth(2)
            if r == 0:
                ax.set_title(headers[kind].format(v=view), fontsize=8)
            if c == 0:
                label = f"#{r}" if rewards is None else f"#{r}\nreward {rewards[r]:.0f}"
                ax.set_ylabel(label, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def render_examples(model: UMMWorldModel, dataset: DynamicsSamples, path: str | Path, rows: int,
                    title: str = "real vs imagined") -> Path:
    """Labelled real-vs-imagined grid of ``rows`` samples spread over ``dataset``; also saves the frames
    as ``<path>.npz`` (current/real/imagined per view) for viewers such as the world-model node."""
    indices = _spread(len(dataset), rows)
    current, following, chunks = _stack(dataset, indices)
    instructions = [dataset[int(i)]["instruction"] for i in indices]
    predicted, rewards = model.step(current, chunks, instructions)[:2]
    np.savez_compressed(Path(path).with_suffix(".npz"), rewards=rewards,
                        **{f"{kind}.{v}": frames[v] for kind, frames in
                           (("current", current), ("real", following), ("imagined", predicted)) for v in current})
    return side_by_side(following, predicted, path, current=current, rewards=rewards, title=title)


def main(argv: list[str] | None = None) -> None:
    from vla_mbpo_ros.core.data.reader import load_episodes
    from vla_mbpo_ros.core.util.config import load_config
    from vla_mbpo_ros.core.world_model.data import split_episodes
    from vla_mbpo_ros.core.world_model.train import SourceConfig, TrainConfig, read_sections

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--dataset-root", required=True)
    parser.add_argument("--config", default="config/world_model.yaml")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    sections = read_sections(args.config)
    source = load_config(SourceConfig, sections["source"], "source")
    data_config = load_config(DataConfig, sections["data"], "data")
    train_config = load_config(TrainConfig, sections["train"], "train")
    eval_config = load_config(EvalConfig, sections["eval"], "eval")
    model = UMMWorldModel.from_pretrained(args.checkpoint, device="cuda" if torch.cuda.is_available() else "cpu")
    episodes = load_episodes(args.dataset_root, tuple(source.view_keys), model.core.und_size, source.repo_id,
                             view_keys=source.view_keys)
    _, held = split_episodes(episodes, source.holdout_episodes, train_config.seed)
    if not held:
        raise ValueError("source.holdout_episodes is 0: nothing held out to evaluate on")
    dynamics, reward = build_samples(held, model.view_names, data_config, model.config.reward_from)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    metrics = {"dynamics": evaluate_dynamics(model, dynamics, eval_config)}
    if len(reward):
        metrics["reward"] = evaluate_reward(model, reward, eval_config)
    render_examples(model, dynamics, out / "real_vs_predicted.png", eval_config.side_by_side_rows)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
