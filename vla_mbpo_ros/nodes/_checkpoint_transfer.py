"""ROS transport of checkpoint transfers (core.policy.transfer holds the logic).

``CheckpointServer``: the world-model node's two services, ``~/checkpoint_manifest`` and
``~/checkpoint_chunk``, serving only the files of versions it announced (reads of at most
``max_chunk_bytes``, cheap enough for the node's single-threaded executor).
``ServiceChunkSource``: the executor's client side, called from its hot-swap thread; it waits on the
response future's completion (an Event), never spins, and gives up after the timeout it is given.
"""

from __future__ import annotations

import array
import threading
from pathlib import Path

from rclpy.node import Node

from vla_mbpo_ros.core.policy.transfer import (
    CheckpointManifest,
    TransferError,
    load_or_build_manifest,
    read_chunk,
    ros_checkpoint_uri,
)
from vla_mbpo_ros.srv import FetchCheckpointChunk, GetCheckpointManifest


class CheckpointServer:
    def __init__(self, node: Node, max_chunk_bytes: int) -> None:
        self.node = node
        self.max_chunk_bytes = max_chunk_bytes
        self._lock = threading.Lock()
        self._served: dict[str, tuple[Path, CheckpointManifest]] = {}
        node.create_service(GetCheckpointManifest, "~/checkpoint_manifest", self._on_manifest)
        node.create_service(FetchCheckpointChunk, "~/checkpoint_chunk", self._on_chunk)

    def offer(self, version: str, directory: Path) -> str:
        """Serve ``version`` from ``directory`` and return the URI to announce. Hashes the files when no
        stored manifest describes them: call it off the executor."""
        manifest = load_or_build_manifest(Path(directory), version)
        with self._lock:
            self._served[version] = (Path(directory), manifest)
        return ros_checkpoint_uri(self.node.get_fully_qualified_name(), version)

    def _lookup(self, version: str) -> tuple[Path, CheckpointManifest] | None:
        with self._lock:
            return self._served.get(version)

    def _on_manifest(self, request, response):
        served = self._lookup(request.version)
        response.success = served is not None
        if served is None:
            response.message = f"version {request.version!r} is not served here"
        else:
            response.manifest_json = served[1].to_json()
        return response

    def _on_chunk(self, request, response):
        served = self._lookup(request.version)
        if served is None:
            response.success, response.message = False, f"version {request.version!r} is not served here"
            return response
        directory, manifest = served
        try:
            data = read_chunk(directory, manifest, request.path, request.offset, min(request.max_bytes, self.max_chunk_bytes))
            response.file_size = manifest.entry(request.path).size
        except (TransferError, OSError) as err:
            response.success, response.message = False, str(err)
            return response
        response.success = True
        response.data = array.array("B", data)  # the generated setter checks a list item by item
        return response


class ServiceChunkSource:
    """``core.policy.transfer.ChunkSource`` over the services of the node ``server``."""

    def __init__(self, node: Node, server: str) -> None:
        self.manifest_client = node.create_client(GetCheckpointManifest, f"{server}/checkpoint_manifest")
        self.chunk_client = node.create_client(FetchCheckpointChunk, f"{server}/checkpoint_chunk")

    def manifest(self, version: str, timeout: float) -> CheckpointManifest:
        response = self._call(self.manifest_client, GetCheckpointManifest.Request(version=version), timeout)
        if not response.success:
            raise TransferError(f"server refused the manifest of {version}: {response.message}")
        return CheckpointManifest.from_json(response.manifest_json)

    def chunk(self, version: str, path: str, offset: int, max_bytes: int, timeout: float) -> bytes:
        request = FetchCheckpointChunk.Request(version=version, path=path, offset=offset, max_bytes=max_bytes)
        response = self._call(self.chunk_client, request, timeout)
        if not response.success:
            raise TransferError(f"server refused {path} of {version} at byte {offset}: {response.message}")
        return response.data.tobytes()

    @staticmethod
    def _call(client, request, timeout: float):
        # rclpy's own wait (it polls every 0.25 s) only until the server is first discovered.
        if not client.service_is_ready() and not client.wait_for_service(timeout_sec=timeout):
            raise TimeoutError(f"service {client.srv_name} not available")
        answered = threading.Event()
        future = client.call_async(request)
        future.add_done_callback(lambda _future: answered.set())
        if not answered.wait(timeout):
            client.remove_pending_request(future)
            raise TimeoutError(f"{client.srv_name}: no response in {timeout:.1f} s")
        return future.result()
