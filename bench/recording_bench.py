"""Episode recording throughput: frames/s the writer stores (PNG staging) and episode save time.

    python bench/recording_bench.py --episodes 3 --frames 100 --size 96 96 --codec libsvtav1
    python bench/recording_bench.py --episodes 100 --frames 20 --codec h264   # begin must not grow

Writes episodes through core.data.EpisodeStore (LeRobotDataset v3, one writer session per
episode, journal + fsync) into a temporary directory. Images are smooth gradients with noise, so
the encoder has realistic work. Reported: add_frame rate (frames/s of writer time, 2 views), save
time per episode (video encoding + parquet + metadata + fsync) and its cost per frame, and the
ratio of the writer's capacity to the recording rate, and how long ``begin`` takes as the dataset grows.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--frames", type=int, default=100, help="frames per episode")
    parser.add_argument("--size", type=int, nargs=2, default=(96, 96), metavar=("H", "W"))
    parser.add_argument("--codec", default="libsvtav1")
    parser.add_argument("--fps", type=int, default=10)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from vla_mbpo_ros.core.data.episode_store import EpisodeStore
    from vla_mbpo_ros.core.data.recording import Outcome, RecordedFrame, RecordingConfig

    config = RecordingConfig(fps=args.fps, image_size=tuple(args.size), video_codec=args.codec, min_free_disk_mb=0.0)
    h, w = config.image_size
    rng = np.random.default_rng(0)
    gradient = np.linspace(0, 200, w, dtype=np.float32)[None, :, None] + np.linspace(0, 50, h, dtype=np.float32)[:, None, None]
    with tempfile.TemporaryDirectory() as tmp:
        store = EpisodeStore(Path(tmp) / "ds", config)
        add_rates, saves, begins = [], [], []
        for episode in range(args.episodes):
            started = time.perf_counter()
            store.begin("pick up the cube", "bench")
            begins.append(time.perf_counter() - started)
            frames = []
            for i in range(args.frames):
                image = np.clip(gradient + i + rng.normal(0, 4, (h, w, 3)), 0, 255).astype(np.uint8)
                frames.append(RecordedFrame({v: image for v in config.views}, np.zeros(6), np.full(6, float(i)),
                                            obs_stamp=i / args.fps, command_stamp=i / args.fps + 0.01))
            started = time.perf_counter()
            for frame in frames:
                store.add(frame)
            add_rates.append(args.frames / (time.perf_counter() - started))
            saves.append(store.save(Outcome.SUCCESS).save_seconds)
        size_mb = sum(p.stat().st_size for p in (Path(tmp) / "ds").rglob("*") if p.is_file()) / 2**20
    add_fps = float(np.median(add_rates))
    save_s = float(np.median(saves))
    # Writer time per recorded second: adding fps frames plus the save's share of them.
    writer_s_per_s = args.fps / add_fps + save_s / (args.frames / args.fps)
    print(f"{args.episodes} episodes x {args.frames} frames, {len(config.views)} views {h}x{w}, {args.codec}, {args.fps} fps")
    print(f"add_frame: {add_fps:.0f} frames/s (median)")
    print(f"begin: {begins[0] * 1e3:.0f} ms the first (reads the dataset's metadata), "
          f"{np.median(begins[1:] or begins) * 1e3:.0f} ms median of the others, {begins[-1] * 1e3:.0f} ms the last")
    print(f"save_episode + finalize + fsync: {save_s:.2f} s median ({save_s / args.frames * 1e3:.1f} ms/frame)")
    print(f"writer busy {writer_s_per_s:.2f} s per recorded second -> capacity {1 / writer_s_per_s:.1f}x real time")
    print(f"dataset size: {size_mb:.2f} MB")
    print(f"recording_bench: episodes={args.episodes} add_fps={add_fps:.0f} save_s={save_s:.2f} "
          f"begin_last_ms={begins[-1] * 1e3:.0f} capacity={1 / writer_s_per_s:.1f}x")


if __name__ == "__main__":
    main()
