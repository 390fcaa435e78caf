"""The finetune run's report: ``metrics.csv`` (one row per iteration), ``real_success.csv`` (one row per
policy version) and ``learning_curves.png`` (real success per version with a 95 % interval, imagined
success before/after RL, world-model losses, PPO diagnostics)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from vla_mbpo_ros.core.loop.schedule import EpisodeLog

PPO_DIAGNOSTICS = ("approx_kl", "clip_fraction", "explained_variance")


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a success rate: honest at the few episodes per version a robot runs
    (the normal approximation collapses to a zero-width interval at 0/n and n/n)."""
    if n <= 0:
        return float("nan"), float("nan")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _mean(values) -> float | str:
    numbers = [v for v in (values or []) if isinstance(v, (int, float)) and not math.isnan(v)]
    return float(np.mean(numbers)) if numbers else ""


def iteration_rows(run_dir: Path) -> list[dict]:
    rows = []
    for path in sorted((run_dir / "iterations").glob("*/result.json")):
        result = json.loads(path.read_text())
        m = result["metrics"]
        rows.append({
            "iteration": result["iteration"],
            "version": result.get("version", ""),
            "published": result["published"],
            "reason": result.get("reason", ""),
            "bc_loss_last": m.get("bc.bc_loss_last", ""),
            "wm_image_loss_first": (m.get("world_model.image_loss") or [""])[0],
            "wm_image_loss_last": (m.get("world_model.image_loss") or [""])[-1],
            "wm_answer_loss_first": (m.get("world_model.answer_loss") or [""])[0],
            "wm_answer_loss_last": (m.get("world_model.answer_loss") or [""])[-1],
            "wm_reward_precision_unseen": m.get("world_model.held_out_reward_precision", ""),
            "wm_reward_recall_unseen": m.get("world_model.held_out_reward_recall", ""),
            "wm_reward_auroc_unseen": m.get("world_model.held_out_reward_auroc", ""),
            "wm_reward_threshold_recalibrated": m.get("world_model.held_out_reward_recalibrated_threshold", ""),
            "imagined_success_before": m.get("rl.success_before", ""),
            "imagined_success_after": m.get("rl.success_after", ""),
            **{key: _mean(m.get(f"rl.{key}")) for key in PPO_DIAGNOSTICS},
        })
    return rows


def version_rows(real_episodes_csv: Path) -> list[dict]:
    rows = []
    for iteration, version, n, successes in EpisodeLog.read_csv(real_episodes_csv).success_by_version():
        low, high = wilson_interval(successes, n)
        rows.append({"iteration": iteration, "policy_version": version or "-", "episodes": n, "successes": successes,
                     "success_rate": successes / n if n else float("nan"), "ci95_low": low, "ci95_high": high})
    return rows


def _write_csv(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _numbers(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    kept = [r for r in rows if r[key] != ""]
    return [r["iteration"] for r in kept], [float(r[key]) for r in kept]


def write_report(run_dir: Path, real_episodes_csv: Path | None = None) -> Path:
    """RUN/report: metrics.csv, real_success.csv and learning_curves.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report = run_dir / "report"
    report.mkdir(exist_ok=True)
    rows = iteration_rows(run_dir)
    _write_csv(report / "metrics.csv", rows)
    real_csv = real_episodes_csv or run_dir / "episodes.csv"
    versions = version_rows(real_csv) if real_csv.exists() else []
    _write_csv(report / "real_success.csv", versions)

    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    ax = axes[0, 0]
    if versions:
        xs = np.arange(len(versions))
        rates = np.array([v["success_rate"] for v in versions])
        errors = np.array([[r - v["ci95_low"] for r, v in zip(rates, versions)],
                           [v["ci95_high"] - r for r, v in zip(rates, versions)]])
        ax.errorbar(xs, 100 * rates, yerr=100 * errors, fmt="o-", capsize=4)
        for x, v in zip(xs, versions):
            ax.annotate(f"{v['successes']}/{v['episodes']}", (x, 100 * v["success_rate"]), textcoords="offset points",
                        xytext=(6, 6), fontsize=8)
        ax.set_xticks(xs, [f"{v['policy_version']}\n(it {v['iteration']})" for v in versions], fontsize=8)
        ax.set_xlim(-0.5, len(versions) - 0.5)
    else:
        ax.text(0.5, 0.5, "no real episodes yet", ha="center", va="center", transform=ax.transAxes)
    ax.set(title="real success per policy version (95% Wilson interval)", ylabel="success (%)", ylim=(-5, 105))

    ax = axes[0, 1]
    for key, marker, label in (("imagined_success_before", "o-", "before RL"), ("imagined_success_after", "s-", "after RL")):
        xs, ys = _numbers(rows, key)
        ax.plot(xs, [100 * y for y in ys], marker, label=label)
    ax.set(title="imagined success on validation starts (world model)", xlabel="iteration", ylabel="success (%)",
           ylim=(-5, 105))
    ax.legend(fontsize=8)

    ax = axes[1, 0]
    for key, label in (("wm_image_loss_last", "image tokens (CE)"), ("wm_answer_loss_last", "Yes/No answer (CE)")):
        xs, ys = _numbers(rows, key)
        ax.plot(xs, ys, "o-", label=label)
    ax.set(title="world-model training loss (end of each iteration)", xlabel="iteration", ylabel="loss")
    ax.legend(fontsize=8)

    ax = axes[1, 1]
    for key in PPO_DIAGNOSTICS:
        xs, ys = _numbers(rows, key)
        ax.plot(xs, ys, "o-", label=key.replace("_", " "))
    ax.axhline(0.0, color="gray", linewidth=0.5)
    ax.set(title="PPO diagnostics (mean over refills)", xlabel="iteration")
    ax.legend(fontsize=8)
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    # One tick per iteration, half a step of margin: a single iteration is a point in the middle, not a
    # point on an axis from 0.95 to 1.05.
    iterations = [r["iteration"] for r in rows] or [0]
    for ax in (axes[0, 1], axes[1, 0], axes[1, 1]):
        ax.set_xticks(range(min(iterations), max(iterations) + 1))
        ax.set_xlim(min(iterations) - 0.5, max(iterations) + 0.5)
    fig.suptitle(f"VLA-MBPO finetune run: {run_dir.name}")
    fig.tight_layout()
    fig.savefig(report / "learning_curves.png", dpi=90)
    plt.close(fig)
    return report


def main(argv: list[str] | None = None) -> None:
    """Rewrite a run's report, e.g. after the last policy version's real episodes (make demo does)."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("run_dir", type=Path, help="the world-model node's run folder (<output_dir>/finetune)")
    parser.add_argument("--episodes", type=Path, default=None,
                        help="the episode manager's episodes.csv (default: RUN_DIR/episodes.csv)")
    args = parser.parse_args(argv)
    print(write_report(args.run_dir, args.episodes))


if __name__ == "__main__":
    main()
