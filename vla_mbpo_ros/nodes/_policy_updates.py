"""The policy executor's update path (the executor's control path is in policy_executor.py).

PolicyUpdate in (transient local) -> on this path's own thread: fetch a ``ros://`` version from the
trainer machine into the executor's own trusted root (chunked, sha256-verified, atomic), verify its
signed manifest against ``trusted_checkpoint_keys``, check and load it, run it on recent real observations (``core.control.hot_swap.prepare_candidate``) -> the
validated candidate waits in the ``PolicySlot`` for the next episode boundary. Every step is
reported as JSON on /vla_mbpo/policy_status (transient local). A fetch or a check never holds the
executor's lock, so the control loop and the running policy go on meanwhile; anything that fails
leaves the running policy as it is.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable

from rclpy.node import Node
from std_msgs.msg import String

from vla_mbpo_ros.conversions import observation_from_msg
from vla_mbpo_ros.core.control.executor import ExecutorCore
from vla_mbpo_ros.core.control.gate import SafetyGate
from vla_mbpo_ros.core.control.hot_swap import HotSwapConfig, PolicySlot, prepare_candidate
from vla_mbpo_ros.core.policy.transfer import TransferConfig, clear_staging, is_ros_uri
from vla_mbpo_ros.core.util.recent import RecentItems
from vla_mbpo_ros.msg import MultiViewObservation, PolicyUpdate
from vla_mbpo_ros.nodes._checkpoint_transfer import ServiceChunkSource
from vla_mbpo_ros.nodes._runtime import LATCHED_QOS, publishing_until_shutdown


class PolicyUpdatePath:
    def __init__(self, node: Node, lock: threading.Lock, core: ExecutorCore, slot: PolicySlot, gate: SafetyGate,
                 config: HotSwapConfig, transfer: TransferConfig, enabled: bool,
                 observations: RecentItems[MultiViewObservation], on_swapped: Callable[[], None]) -> None:
        """``lock`` guards ``core`` and ``slot``; ``on_swapped`` runs under it after a swap; ``observations``
        are the executor's recent real ones, which a candidate is validated on."""
        self.node, self.lock, self.core, self.slot, self.gate = node, lock, core, slot, gate
        self.config, self.transfer, self.enabled = config, transfer, enabled
        self.observations, self.on_swapped = observations, on_swapped
        self._sources: dict[str, ServiceChunkSource] = {}  # checkpoint servers, by node name
        self._updates: queue.Queue[PolicyUpdate | None] = queue.Queue()
        clear_staging(config.receive_root)  # what an interrupted fetch of an earlier run left
        self.status_pub = node.create_publisher(String, "/vla_mbpo/policy_status", LATCHED_QOS)
        node.create_subscription(PolicyUpdate, "/vla_mbpo/policy_update", self._updates.put, LATCHED_QOS)
        self._thread = threading.Thread(target=self._loop, name="hot_swap", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def install(self, policy, version: str, reason: str) -> None:
        """Run ``policy`` from now on (caller holds the lock)."""
        self._publish(self.slot.install(policy, version, reason))
        self.core.set_policy(policy.chunk_size)

    def swap_at_boundary(self) -> bool:
        """Swap a validated candidate in when no episode is running (caller holds the lock)."""
        previous = self.slot.version
        status = self.slot.swap_at_boundary(self.core.episode is not None)
        if status is None:
            return False
        self.core.set_policy(self.slot.policy.chunk_size)
        self._publish(status)
        self.on_swapped()
        self.node.get_logger().info(f"policy {self.slot.version!r} is running (was {previous!r})")
        return True

    def _loop(self) -> None:
        while (update := self._updates.get()) is not None:
            about = {"uri": update.uri, "sha256": update.sha256}
            if is_ros_uri(update.uri):
                self._publish(self.slot.report(update.version, "fetching", f"fetching {update.uri}", None, **about))
                self.node.get_logger().info(f"policy {update.version!r}: fetching {update.uri}")
            try:
                if not self.enabled:
                    raise ValueError("policy_enabled is false on this executor")
                candidate = prepare_candidate(update.version, update.uri, update.sha256, self.config, self.transfer,
                                              self._source, self._recent_observations, self.gate)
            except ValueError as err:
                with self.lock:
                    self._publish(self.slot.reject(update.version, str(err), **about))
                    running = self.slot.version
                self.node.get_logger().error(f"policy {update.version!r} rejected, keeping {running!r}: {err}")
                continue
            with self.lock:
                self._publish(self.slot.offer(candidate, update.version))
                swapped = self.swap_at_boundary()
            if not swapped:
                self.node.get_logger().info(f"policy {update.version!r} validated; swapping at the end of the episode")

    def _recent_observations(self) -> list:
        """Waits (on a condition) up to validation_wait_s for validation_observations of them."""
        recent = self.observations.wait_for(self.config.validation_observations, self.config.validation_wait_s)
        try:
            return [observation_from_msg(m, self.core.joint_names) for m in recent]
        except ValueError as err:
            raise ValueError(f"cannot decode recent observations: {err}") from err

    def _source(self, server: str) -> ServiceChunkSource:
        if server not in self._sources:  # this thread only
            self._sources[server] = ServiceChunkSource(self.node, server)
        return self._sources[server]

    def _publish(self, status: dict) -> None:
        with publishing_until_shutdown(self.node):
            self.status_pub.publish(String(data=json.dumps(status)))

    def close(self) -> None:
        self._updates.put(None)
        self._thread.join(timeout=5.0)
