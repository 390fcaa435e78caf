"""The finetune run's report: metrics.csv (one row per iteration) and learning_curves.png."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def write_report(run_dir: Path, real_episodes_csv: Path | None = None) -> Path:
    """RUN/report: metrics.csv (one row per iteration) and learning_curves.png."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report = run_dir / "report"
    report.mkdir(exist_ok=True)
    rows = []
    for path in sorted((run_dir / "iterations").glob("*/result.json")):
        result = json.loads(path.read_text())
        m = result["metrics"]
        rows.append({
            "iteration": result["iteration"],
            "version": result.get("version", ""),
            "published": result["published"],
            "bc_loss_last": m.get("bc.bc_loss_last", ""),
            "wm_image_loss_last": (m.get("world_model.image_loss") or ["", ""])[-1],
            "wm_answer_loss_last": (m.get("world_model.answer_loss") or ["", ""])[-1],
            "imagined_success_before": m.get("rl.success_before", ""),
            "imagined_success_after": m.get("rl.success_after", ""),
        })
    if rows:
        with (report / "metrics.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    rl_rows = [r for r in rows if r["imagined_success_after"] != ""]
    axes[0].plot([r["iteration"] for r in rl_rows], [r["imagined_success_before"] for r in rl_rows], "o-", label="before RL")
    axes[0].plot([r["iteration"] for r in rl_rows], [r["imagined_success_after"] for r in rl_rows], "s-", label="after RL")
    axes[0].set(title="imagined success (world model)", xlabel="iteration", ylim=(-0.05, 1.05))
    axes[0].legend()
    real_csv = real_episodes_csv or run_dir / "episodes.csv"
    if real_csv.exists():
        with real_csv.open() as handle:
            real = list(csv.DictReader(handle))
        by_iteration: dict[int, list[float]] = {}
        for r in real:
            if r["success"] in ("True", "False"):
                by_iteration.setdefault(int(r["iteration"]), []).append(float(r["success"] == "True"))
        xs = sorted(by_iteration)
        axes[1].plot(xs, [np.mean(by_iteration[x]) for x in xs], "o-")
    axes[1].set(title="real success rate per iteration", xlabel="iteration", ylim=(-0.05, 1.05))
    fig.tight_layout()
    fig.savefig(report / "learning_curves.png", dpi=80)
    plt.close(fig)
    return report
