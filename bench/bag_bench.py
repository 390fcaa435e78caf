"""rosbag2 -> LeRobotDataset conversion speed (frames/s), raw and compressed cameras.

    python bench/bag_bench.py --seconds 20 --fps 10 --size 240 320

Writes a bag the way ``ros2 bag record`` does (rosbags' writer, mcap with zstd chunks): two cameras
at ``fps`` (sensor_msgs/Image rgb8, or CompressedImage jpeg), joint states at 100 Hz, JointTrajectory
commands at ``fps``, one EpisodeEvent-delimited episode per 10 s. Then converts it with
``core.data.bag_conversion.convert_bag`` into a video dataset (h264), after LeRobot is imported (a
one-off 10-20 s that is not conversion) and a 1 s warm-up conversion. Reported per transport: frames/s end to end (read, decode,
assemble, write PNG staging, encode video, save) and frames/s of reading + assembling alone.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "test"))  # the ros2-bag-record-shaped writer of the tests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--fps", type=int, default=10)
    parser.add_argument("--size", type=int, nargs=2, default=(240, 320), metavar=("H", "W"))
    parser.add_argument("--codec", default="h264")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from lerobot.datasets.lerobot_dataset import LeRobotDataset  # noqa: F401  (the one-off import, not timed)
    from rosbag_recordings import JOINTS, SyntheticRecording, write_bag

    from vla_mbpo_ros.core.data.bag_conversion import Bag, ConversionReport, assemble_frames, convert_bag, episode_spans
    from vla_mbpo_ros.core.data.bag_mapping import load_mapping

    rename = {f"joint_{i}": name for i, name in enumerate(JOINTS)}
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        for transport, kind in (("warm-up", "rgb8"), ("raw", "rgb8"), ("compressed", "jpeg")):
            seconds = 1.0 if transport == "warm-up" else args.seconds  # the first episode saved imports more of LeRobot
            rec = SyntheticRecording(fps=args.fps, seconds=seconds, height=args.size[0], width=args.size[1],
                                     state_rate=100, camera_types={"head": kind, "wrist": kind})
            t = rec.frame_times()
            per_episode = 10 * args.fps
            events = []
            for start in range(0, len(t), per_episode):
                last = min(start + per_episode, len(t)) - 1
                events += [rec.event(0, t[start] - 1000, "pick up the cube"), rec.event(2, t[last] + 1000)]
            bag = write_bag(Path(tmp) / f"bag_{transport}", rec.messages() + events, "mcap", "storage")
            size_mb = sum(p.stat().st_size for p in bag.iterdir()) / 2**20
            mapping = load_mapping({
                "fps": args.fps, "video_codec": args.codec,
                "cameras": {v: {"topic": rec.camera_topic(v)} for v in ("head", "wrist")},
                "state": {"topic": "/joint_states", "joints": list(JOINTS), "rename": rename},
                "action": {"topic": "/arm_controller/joint_trajectory", "rename": rename},
                "episodes": {"topic": "/vla_mbpo/episode_event"}})
            began = time.perf_counter()
            with Bag(bag) as opened:
                report = ConversionReport()
                assembled = sum(1 for _ in assemble_frames(opened, mapping, episode_spans(mapping, opened), report))
            read_fps = assembled / (time.perf_counter() - began)
            began = time.perf_counter()  # the whole call: mapping checks, episode pass, dataset creation included
            report = convert_bag(bag, mapping, Path(tmp) / f"dataset_{transport}")
            report.seconds = time.perf_counter() - began
            assert report.frames == assembled == len(t), (report.summary(), assembled, len(t))
            if transport == "warm-up":
                continue
            figures[transport] = (report.frames / report.seconds, read_fps)
            print(f"{transport}: bag {size_mb:.1f} MB, {report.summary()}; reading + assembling alone {read_fps:.0f} frames/s")
    print(f"{len(t)} frames of 2 views {args.size[0]}x{args.size[1]} at {args.fps} fps, {args.codec}, 1 torch thread")
    print("bag_bench: " + " ".join(f"{name}={end:.1f}fps(read={read:.0f}fps)" for name, (end, read) in figures.items()))


if __name__ == "__main__":
    main()
