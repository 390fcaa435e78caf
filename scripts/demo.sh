#!/usr/bin/env bash
# make demo: the whole loop on the simulated SO-101, bounded (~20 min on a 2-core CPU).
#  1. teleop profile: the scripted expert records demonstrations through the safety gate into a
#     LeRobotDataset (skipped when the dataset already has them);
#  2. finetune profile: behaviour-cloned first policy, then VLA-MBPO iterations (world model ->
#     branched imagined rollouts + PPO -> validation -> hot-swap), real (sim) episodes in between.
# Extra arguments go to both profiles, e.g. scripts/demo.sh output_dir:=/tmp/run
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
OUT=outputs/demo
for arg in "$@"; do
  case "$arg" in output_dir:=*) OUT="${arg#output_dir:=}" ;; esac
done
args=("output_dir:=$OUT" "$@")
start=$(date +%s)
if [ ! -f "$OUT/dataset/meta/info.json" ]; then
  echo "== 1/2 recording demonstrations with the scripted expert (teleop profile)"
  python -m vla_mbpo_ros.bringup teleop "${args[@]}"
else
  echo "== 1/2 demonstrations already in $OUT/dataset"
fi
echo "== 2/2 finetune loop (finetune profile)"
python -m vla_mbpo_ros.bringup finetune "${args[@]}"
# The report was last written when the last update finished; add the real episodes of the version it made.
python -m vla_mbpo_ros.core.loop.report "$OUT/finetune" --episodes "$OUT/episodes.csv" > /dev/null
echo
echo "== done in $(( $(date +%s) - start )) s"
echo "report:           $OUT/finetune/report (metrics.csv, learning_curves.png)"
echo "imagined frames:  $OUT/finetune/iterations/*/real_vs_imagined.png"
echo "real episodes:    $OUT/episodes.csv"
echo "dataset:          $OUT/dataset (LeRobotDataset v3)"
python -c "import sys; from vla_mbpo_ros.core.loop.schedule import EpisodeLog
print('\nreal (sim) success rate per policy version:'); print(EpisodeLog.read_csv(sys.argv[1]).table())" "$OUT/episodes.csv"
