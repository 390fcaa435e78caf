"""Rate of the checkpoint transfer services between two processes (the world-model node's server glue
and the executor's client glue, core.policy.transfer in between):

    . scripts/env.sh && ROS_DOMAIN_ID=77 python bench/transfer_bench.py [--mib 64] [--chunks 1,4]

A server process offers a random checkpoint of ``--mib`` MiB; this process fetches it with each chunk
size (MiB) into a temporary receiving root, verified, and prints MB/s. On one machine the data goes
through Fast DDS shared memory; between two machines the same services run over UDP, where the link
is usually the limit (1 GbE ~ 110 MB/s).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def serve(directory: Path) -> None:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    from vla_mbpo_ros.nodes._checkpoint_transfer import CheckpointServer

    rclpy.init()
    node = Node("world_model_node")
    server = CheckpointServer(node, 8 << 20)
    server.offer("v0001", directory)
    print("serving", flush=True)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except KeyboardInterrupt:
        pass


def fetch(chunk_mib: list[int]) -> list[tuple[int, float, float]]:
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.node import Node

    from vla_mbpo_ros.core.policy.transfer import TransferConfig, receive_checkpoint
    from vla_mbpo_ros.nodes._checkpoint_transfer import ServiceChunkSource

    rclpy.init()
    node = Node("transfer_bench")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    def spin() -> None:
        try:
            executor.spin()
        except ExternalShutdownException:
            pass

    threading.Thread(target=spin, daemon=True).start()
    source = ServiceChunkSource(node, "/world_model_node")
    source.manifest("v0001", timeout=30.0)  # discovery and matching are not part of the rate
    results = []
    for mib in chunk_mib:
        with tempfile.TemporaryDirectory() as root:
            started = time.perf_counter()
            manifest = source.manifest("v0001", timeout=30.0)
            received = receive_checkpoint(source, "v0001", manifest.checkpoint_sha256, Path(root),
                                          TransferConfig(chunk_bytes=mib << 20, chunk_timeout_s=30.0))
            seconds = time.perf_counter() - started
            assert received.is_dir()
        results.append((mib, manifest.total_bytes / seconds / 1e6, seconds))
    rclpy.shutdown()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--chunks", default="1,4,8")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / "v0001"
        checkpoint.mkdir()
        (checkpoint / "model.safetensors").write_bytes(os.urandom(args.mib << 20))
        (checkpoint / "config.json").write_text('{"type": "bench"}')
        server = subprocess.Popen([sys.executable, __file__, "--serve", str(checkpoint)], stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout.readline().strip() == "serving"
            results = fetch([int(c) for c in args.chunks.split(",")])
        finally:
            server.terminate()
            server.wait(timeout=10)
    for mib, rate, seconds in results:
        print(f"chunk {mib} MiB: {args.mib} MiB in {seconds:.2f} s = {rate:.1f} MB/s (verified)")
    print("transfer_bench: " + ", ".join(f"{rate:.0f} MB/s with {mib} MiB chunks" for mib, rate, _ in results)
          + f" ({args.mib} MiB checkpoint, two processes on one machine)")


if __name__ == "__main__":
    main()
