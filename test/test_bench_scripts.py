"""The benches are not run by the tests (they take minutes to hours), but each must at least compile,
so that a broken one is found here and not by the next person who needs its figures."""

from __future__ import annotations

import json
import py_compile
from pathlib import Path

import pytest

BENCH_DIR = Path(__file__).resolve().parents[1] / "bench"
BENCHES = sorted(BENCH_DIR.glob("*.py"))


def test_there_are_benches():
    assert len(BENCHES) >= 5


@pytest.mark.parametrize("script", BENCHES, ids=lambda p: p.name)
def test_bench_compiles(script: Path, tmp_path: Path):
    py_compile.compile(str(script), cfile=str(tmp_path / "out.pyc"), doraise=True)


def _learning_bench():
    import importlib.util

    spec = importlib.util.spec_from_file_location("learning_bench", BENCH_DIR / "learning_bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_run(run: Path, seed: int, bc: list[int], methods: dict[str, list[int]]) -> None:
    results = {"settings": {"demos": 80, "iterations": 5, "real_episodes": 10}, "bc_success": sum(bc) / len(bc),
               "bc_successes": bc, "methods": {name: {"final_successes": s} for name, s in methods.items()}}
    (run / f"seed_{seed}").mkdir(parents=True)
    (run / f"seed_{seed}" / "results.json").write_text(json.dumps(results))


def test_learning_bench_combines_methods_run_separately_on_the_same_bc(tmp_path: Path, capsys):
    bench = _learning_bench()
    for seed in (0, 1):
        _write_run(tmp_path / "sim", seed, [0, 1, 0, 0], {"mbpo_sim": [1, 1, 0, 1]})
        _write_run(tmp_path / "umm", seed, [0, 1, 0, 0], {"mbpo_umm": [1, 1, 0, 0]})
    summary = bench.main(["--out", str(tmp_path / "all"), "--combine", str(tmp_path / "sim"), str(tmp_path / "umm")])
    assert summary["per_seed"]["1"] == {"bc": 0.25, "mbpo_sim": 0.75, "mbpo_umm": 0.5}
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith(
        "learning_bench: seeds=0,1 bc=25.0 ppo=n/a mbpo_sim=75.0 mbpo_umm=50.0 umm_minus_bc=25.0[")
    assert (tmp_path / "all" / "success.png").is_file()


def test_learning_bench_refuses_to_combine_runs_of_another_bc_policy(tmp_path: Path):
    bench = _learning_bench()
    _write_run(tmp_path / "a", 0, [0, 1, 0, 0], {"mbpo_sim": [1, 1, 0, 1]})
    _write_run(tmp_path / "b", 0, [1, 1, 0, 0], {"mbpo_umm": [1, 1, 0, 0]})
    with pytest.raises(SystemExit, match="seed 0: .*BC evaluation differs"):
        bench.main(["--out", str(tmp_path / "all"), "--combine", str(tmp_path / "a"), str(tmp_path / "b")])


def test_learning_bench_scores_the_umm_reward_against_the_goals_over_every_iteration(tmp_path: Path, capsys):
    bench = _learning_bench()
    iterations = [  # one iteration meets precision >= 0.9 and recall >= 0.6; one misses recall, one precision
        {"reward_precision": 0.95, "reward_recall": 0.7, "reward_auroc": 0.9, "imagined_agreement": 0.8},
        {"reward_precision": 1.0, "reward_recall": 0.5, "reward_auroc": 0.7, "imagined_agreement": float("nan")},
        {"reward_precision": 0.8, "reward_recall": 1.0, "reward_auroc": 0.6, "imagined_agreement": 0.6},
        {"reward_trusted": 0.0},  # no labelled frame: nothing measured
    ]
    _write_run(tmp_path / "umm", 0, [0, 1, 0, 0], {"mbpo_umm": [1, 1, 0, 0]})
    results = tmp_path / "umm" / "seed_0" / "results.json"
    run = json.loads(results.read_text())
    run["methods"]["mbpo_umm"]["iterations"] = iterations
    results.write_text(json.dumps(run))
    summary = bench.main(["--out", str(tmp_path / "all"), "--combine", str(tmp_path / "umm")])
    reward = summary["mbpo_umm_reward"]
    assert (reward["reward_goal_met"], reward["iterations"]) == (1, 3)
    assert reward["reward_auroc"] == [0.9, 0.7, 0.6] and reward["imagined_agreement"] == [0.8, 0.6]  # nan left out
    assert "precision >= 0.9 and recall >= 0.6 in 1 of 3 iterations; AUROC median 0.70 [0.60, 0.90] over 3" \
        in capsys.readouterr().out


@pytest.mark.slow
def test_lerobot_reference_trains_with_lerobot_train_and_evaluates_its_checkpoint_in_the_sim(tmp_path: Path):
    """The reference row end to end at toy size: the bench's demos written as a LeRobotDataset (read back by
    LeRobot: the same episodes, the first one's actions), LeRobot's own ``lerobot-train`` on it, the checkpoint loaded with
    ``from_pretrained`` and evaluated on the bench's start states."""
    import re
    import subprocess
    import sys

    import numpy as np
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    out = tmp_path / "ref"
    result = subprocess.run(
        [sys.executable, str(BENCH_DIR / "lerobot_reference.py"), "--out", str(out), "--seeds", "3", "--demos", "2",
         "--demo-cache", str(tmp_path / "demos"), "--steps", "2", "--batch-size", "2", "--eval-episodes", "2"],
        capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.fullmatch(r"lerobot_reference: policy=act seeds=3 success=\d+\.\d\[\d+\.\d,\d+\.\d\] per_seed=\d+\.\d",
                        result.stdout.strip().splitlines()[-1])

    demos = np.load(next((tmp_path / "demos").glob("*.npz")))
    meta = json.loads(str(demos["meta"]))
    dataset = LeRobotDataset("local/bench_demos", root=out / "dataset")
    assert dataset.num_episodes == len(meta) >= 1
    first = dataset.meta.episodes[0]
    length = first["dataset_to_index"] - first["dataset_from_index"]
    assert length == len(demos["0/actions"])
    np.testing.assert_allclose(np.stack([dataset.hf_dataset[i]["action"].numpy() for i in range(length)]),
                               demos["0/actions"], atol=1e-6)

    summary = json.loads((out / "summary_offset0.json").read_text())
    assert summary["steps"] == 2 and len(summary["per_seed"]["3"]["successes"]) == 2
    assert (Path(summary["per_seed"]["3"]["checkpoint"]) / "model.safetensors").is_file()
