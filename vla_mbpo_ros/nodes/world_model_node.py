"""Offboard world-model node: between episodes, improve the policy with VLA-MBPO and publish it.

After every ``episodes_per_update`` labelled real episodes (EpisodeEvent SUCCESS/FAILURE), or on
``~/update_now``, it runs one outer iteration of core.mbpo.pipeline in a worker *process* (training
never blocks this node's executor, and a GPU job can't take the ROS graph down with it): finetune
the world model on the dataset, branched imagined rollouts + PPO, validation, a versioned
checkpoint with its sha256. An accepted version is announced on /vla_mbpo/policy_update (transient
local: a policy node that starts later still gets it). With no policy yet, the first iteration is
behaviour cloning on the recorded demonstrations.

It shares nothing with the policy node but ROS. ``checkpoint_transfer: file`` (one machine) announces
a version as a file:// URI the executor reads in place; ``ros`` (a trainer machine without a shared
filesystem) announces ros:///<this node>/<version> and serves the files on ``~/checkpoint_manifest``
and ``~/checkpoint_chunk`` (core.policy.transfer), which the executor fetches into its own trusted
root. Either way the version's manifest is first signed with ``checkpoint_signing_key`` (ed25519,
core.policy.signing): executors accept only versions signed by a key they trust. The dataset is written next to this node by the recorder (on this machine too). Killed at any point,
it resumes the unfinished iteration when restarted (the worker exits when its node is gone).
Progress: latched JSON on /vla_mbpo/world_model/status, /diagnostics, and the worker's log with tqdm
bars in <output_dir>/finetune/worker.log. After each world-model phase its real-vs-imagined examples go
out on /vla_mbpo/imagined/<view>/image_raw and, stamped alike, the real frames on
/vla_mbpo/imagined/<view>/real/image_raw (latched), for RViz or Foxglove.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import String
from std_srvs.srv import Trigger

from vla_mbpo_ros.bringup import config_dir
from vla_mbpo_ros.conversions import numpy_to_image
from vla_mbpo_ros.core.loop.pipeline import PipelineConfig, read_state
from vla_mbpo_ros.core.policy.signing import ensure_key_pair, load_private_key, sign_checkpoint
from vla_mbpo_ros.msg import EpisodeEvent, PolicyUpdate
from vla_mbpo_ros.nodes._checkpoint_transfer import CheckpointServer
from vla_mbpo_ros.nodes._diagnostics import ERROR, OK, DiagnosticsPublisher
from vla_mbpo_ros.nodes._runtime import LATCHED_QOS, RELIABLE_QOS, ConfigError, declare, publishing_until_shutdown, run_node

_LABELLED_ENDS = (EpisodeEvent.SUCCESS, EpisodeEvent.FAILURE)


def count_labelled_episodes(dataset: Path) -> int:
    """Episodes saved in the dataset (cheap: the metadata's total, no frames read)."""
    info = dataset / "meta" / "info.json"
    return int(json.loads(info.read_text()).get("total_episodes", 0)) if info.is_file() else 0


class WorldModelNode(Node):
    def __init__(self) -> None:
        super().__init__("world_model_node")
        output_dir = Path(declare(self, "output_dir", "outputs", "dataset and checkpoints live here")).resolve()
        self.dataset = output_dir / declare(self, "dataset_name", "dataset")
        self.run_dir = output_dir / "finetune"
        self.real_episodes_csv = output_dir / "episodes.csv"
        config = declare(self, "pipeline_config", "", "pipeline YAML; '' = the package's config/finetune_sim.yaml")
        self.pipeline_config = Path(config) if config else config_dir() / "finetune_sim.yaml"
        self.episodes_per_update = declare(self, "episodes_per_update", 4, "labelled real episodes per update")
        self.bootstrap = declare(self, "bootstrap", True, "without a policy, behaviour-clone the first one")
        self.device = declare(self, "device", "cpu", "torch device of the worker (cpu, cuda, cuda:1)")
        self.worker_niceness = declare(self, "worker_niceness", 10, "CPU priority drop of the training worker (0-19)")
        self.worker_processes = declare(self, "worker_processes", 1, "training processes (torchrun; one per GPU)")
        self.checkpoint_transfer = declare(self, "checkpoint_transfer", "file",
                                           "file: announce file:// paths (one machine); ros: serve the files over ROS")
        max_chunk_bytes = declare(self, "max_chunk_bytes", 4 << 20, "largest piece of a file one request gets")
        signing_key = declare(self, "checkpoint_signing_key", "", "ed25519 private key that signs every announced version")
        create_key = declare(self, "create_signing_key", False, "create the key pair when missing (one-machine sim setup)")
        self.signing_key = self._signing_key(Path(signing_key).expanduser() if signing_key else None, create_key)
        if self.checkpoint_transfer not in ("file", "ros"):
            raise ConfigError(f"checkpoint_transfer must be file or ros, got {self.checkpoint_transfer!r}")
        if max_chunk_bytes < 1:
            raise ConfigError(f"max_chunk_bytes must be >= 1, got {max_chunk_bytes}")
        try:
            self.min_episodes = PipelineConfig.from_yaml(self.pipeline_config).min_episodes
        except (OSError, ValueError, TypeError) as err:
            raise ConfigError(f"pipeline_config {self.pipeline_config}: {err}") from err
        if self.episodes_per_update < 1:
            raise ConfigError(f"episodes_per_update must be >= 1, got {self.episodes_per_update}")
        if self.worker_processes < 1:
            raise ConfigError(f"worker_processes must be >= 1, got {self.worker_processes}")
        if not 0 <= self.worker_niceness <= 19:
            raise ConfigError(f"worker_niceness must be in 0..19, got {self.worker_niceness}")
        self.run_dir.mkdir(parents=True, exist_ok=True)

        self.update_pub = self.create_publisher(PolicyUpdate, "/vla_mbpo/policy_update", LATCHED_QOS)
        view_names = PipelineConfig.from_yaml(self.pipeline_config).view_names
        # Latched with room for one iteration's examples: a viewer that connects later still gets them.
        examples_qos = QoSProfile(depth=16, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.example_pubs = {(view, kind): self.create_publisher(Image, f"/vla_mbpo/imagined/{view}/{topic}", examples_qos)
                             for view in view_names for kind, topic in (("imagined", "image_raw"), ("real", "real/image_raw"))}
        self.status_pub = self.create_publisher(String, "/vla_mbpo/world_model/status", LATCHED_QOS)
        self.create_subscription(EpisodeEvent, "/vla_mbpo/episode_event", self._on_episode_event, RELIABLE_QOS)
        self.create_service(Trigger, "~/update_now", self._on_update_now)
        self.checkpoints = CheckpointServer(self, max_chunk_bytes) if self.checkpoint_transfer == "ros" else None
        self._lock = threading.Lock()
        self._announce_lock = threading.Lock()
        self._announced = ""  # the newest version announced (v0001 < v0002: zero-padded)
        self._worker: subprocess.Popen | None = None
        self.status: dict = {"state": "idle", "iteration": read_state(self.run_dir)["iterations_done"], "updates_finished": 0}
        # Counted from the dataset, not only from events: a node restarted (respawned after a crash) still
        # knows the episodes recorded since the last update started, or the loop would wait forever.
        self._trigger_file = self.run_dir / "update_trigger.json"
        self.episodes_since_update = self._episodes_since_last_start()
        self.diagnostics = DiagnosticsPublisher(self, self._report, period=1.0)
        self.create_timer(1.0, self._tick)

        current = read_state(self.run_dir)["current_policy"]
        if current is not None:  # off the executor: serving over ROS may hash the files first
            threading.Thread(target=self._announce, args=(current, {}), daemon=True).start()
        if self._unfinished_iteration():
            self.get_logger().info("resuming the unfinished iteration")
            self._start_worker("resume")
        self._publish_status()

    def _signing_key(self, path: Path | None, create: bool):
        """The executor accepts only signed versions (core.policy.signing): no key, no node."""
        if path is None:
            raise ConfigError("checkpoint_signing_key: required (executors accept only signed checkpoints); create a "
                              "pair with `python -m vla_mbpo_ros.keys generate --out DIR`")
        if create and not path.exists():
            ensure_key_pair(path.parent, f"world_model_node@{socket.gethostname()}")
            self.get_logger().info(f"created checkpoint signing key {path} (public key next to it)")
        try:
            return load_private_key(path)
        except ValueError as err:
            raise ConfigError(f"checkpoint_signing_key: {err}") from err

    # ---------------------------------------------------------------- triggers
    def _on_episode_event(self, msg: EpisodeEvent) -> None:
        if msg.event in _LABELLED_ENDS:
            with self._lock:
                self.episodes_since_update += 1

    def _on_update_now(self, _request, response):
        started = self._start_worker("requested")
        response.success = started
        response.message = "update started" if started else "an update is already running"
        return response

    def _episodes_since_last_start(self) -> int:
        if not self._trigger_file.is_file():
            return 0
        at_start = int(json.loads(self._trigger_file.read_text()).get("episodes", 0))
        return max(0, count_labelled_episodes(self.dataset) - at_start)

    def _unfinished_iteration(self) -> bool:
        state = read_state(self.run_dir)
        path = self.run_dir / "iterations" / f"{state['iterations_done']:04d}"
        return path.is_dir() and not (path / "result.json").exists()

    def _tick(self) -> None:
        with self._lock:
            running = self._worker is not None and self._worker.poll() is None
            due = self.episodes_since_update >= self.episodes_per_update
        if running:
            return
        if read_state(self.run_dir)["current_policy"] is None:
            if self.bootstrap and count_labelled_episodes(self.dataset) >= self.min_episodes:
                self._start_worker("bootstrap")
        elif due:
            self._start_worker(f"{self.episodes_per_update} new episodes")

    # ---------------------------------------------------------------- worker
    def _start_worker(self, reason: str) -> bool:
        with self._lock:
            if self._worker is not None and self._worker.poll() is None:
                return False
            self.episodes_since_update = 0
            tmp = self._trigger_file.with_name("." + self._trigger_file.name + ".tmp")
            tmp.write_text(json.dumps({"episodes": count_labelled_episodes(self.dataset), "reason": reason}))
            os.replace(tmp, self._trigger_file)
            # Several processes: torchrun starts them (DDP / accelerate inside); rank 0 reports on stdout.
            launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={self.worker_processes}"] \
                if self.worker_processes > 1 else []
            cmd = [
                sys.executable, "-u", *launcher, "-m", "vla_mbpo_ros.core.loop.pipeline",
                "--run-dir", str(self.run_dir), "--dataset", str(self.dataset),
                "--config", str(self.pipeline_config), "--real-episodes", str(self.real_episodes_csv),
                "--parent-pid", str(os.getpid()), "--niceness", str(self.worker_niceness),
            ]
            env = dict(os.environ, PYTHONUNBUFFERED="1")
            if self.device.startswith("cuda:"):
                env["CUDA_VISIBLE_DEVICES"] = self.device.split(":", 1)[1]
            elif self.device == "cpu":
                env["CUDA_VISIBLE_DEVICES"] = ""
            log = open(self.run_dir / "worker.log", "ab")
            self._worker = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, env=env)
            log.close()
            self.status.update(state="training", reason=reason, phase="starting", started=time.time())
        self.get_logger().info(f"update started ({reason}); log: {self.run_dir / 'worker.log'}")
        threading.Thread(target=self._follow_worker, args=(self._worker,), daemon=True).start()
        self._publish_status()
        return True

    def _follow_worker(self, worker: subprocess.Popen) -> None:
        result = None
        for raw in iter(worker.stdout.readline, b""):
            try:
                line = json.loads(raw)
            except json.JSONDecodeError:
                continue
            event = line.pop("event", "")
            with self._lock:
                if event == "start":
                    self.status["iteration"] = line["iteration"]
                elif event == "phase":
                    self.status.update(phase=line["phase"], step=0, total=0)
                    self.get_logger().info(f"iteration {line['iteration']}: phase {line['phase']}")
                    if line["phase"] != "world_model":  # the world-model phase, when there was one, is done
                        self._publish_examples(self.run_dir / "iterations" / f"{line['iteration']:04d}")
                elif event == "progress":
                    self.status.update(step=line.get("step", 0), total=line.get("total", 0))
                elif event == "done":
                    result = line
                elif event == "error":
                    self.status["error"] = line["message"]
            self._publish_status()
        code = worker.wait()
        with self._lock:
            self.status.update(state="idle", phase="", updates_finished=self.status["updates_finished"] + 1)
            if result is not None:
                self.status["last_result"] = {k: result.get(k) for k in ("iteration", "published", "version", "reason")}
        if result is None and self._closing:
            self.get_logger().info("update stopped with the node; a restart resumes it")
        elif result is None:
            self.get_logger().error(f"update failed (worker exit code {code}): {self.status.get('error', 'see worker.log')}")
        elif result.get("published"):
            self._announce(result, result.get("metrics", {}))
        else:
            self.get_logger().warning(f"candidate rejected, keeping the running policy: {result.get('reason')}")
        self._publish_status()

    def _announce(self, published: dict, metrics: dict) -> None:
        """Announce a published version (a worker thread: offering it over ROS may hash its files)."""
        version, path = published["version"], Path(published["path"])
        try:
            sign_checkpoint(path, version, self.signing_key)
            uri = self.checkpoints.offer(version, path) if self.checkpoints is not None else path.as_uri()
        except (OSError, ValueError) as err:
            self.get_logger().error(f"cannot serve policy {version} from {path}: {err}")
            return
        msg = PolicyUpdate(version=version, uri=uri, sha256=published["sha256"])
        msg.policy_type = published.get("policy_type", "compact_flow_vla")
        numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        msg.metric_names, msg.metric_values = list(numeric), list(numeric.values())
        msg.header.stamp = self.get_clock().now().to_msg()
        with self._announce_lock:
            # The start-up announcement (a thread) must not overwrite a newer version on the latched topic.
            if self._announced and version < self._announced:
                return
            self._announced = version
            self.update_pub.publish(msg)
        self.get_logger().info(f"published policy {msg.version} ({msg.uri})")

    def _publish_examples(self, iteration_dir: Path) -> None:
        """The world-model phase's real-vs-imagined examples as images (once per iteration)."""
        path = iteration_dir / "real_vs_imagined.npz"
        if not path.is_file() or path == self._examples_sent:
            return
        self._examples_sent = path
        now = self.get_clock().now()
        with np.load(path) as examples:
            for (view, kind), publisher in self.example_pubs.items():
                for row, frame in enumerate(examples[f"{kind}.{view}"] if f"{kind}.{view}" in examples else []):
                    # Row i of every topic carries the same stamp: viewers pair real and imagined by it.
                    stamp = (now + Duration(nanoseconds=row * 1_000_000)).to_msg()
                    publisher.publish(numpy_to_image(frame, "rgb8", stamp, frame_id=f"imagined_{view}"))

    # ---------------------------------------------------------------- status
    def _publish_status(self) -> None:
        with self._lock:
            status = dict(self.status, episodes_since_update=self.episodes_since_update)
        with publishing_until_shutdown(self):  # the worker's follower thread may report after a shutdown
            self.status_pub.publish(String(data=json.dumps(status, default=str)))

    def _report(self):
        with self._lock:
            values = {k: v for k, v in self.status.items() if not isinstance(v, dict)}
            values["episodes_since_update"] = self.episodes_since_update
            started = self.status.get("started")
        if self.status["state"] == "training" and started:
            values["elapsed_s"] = round(time.time() - started, 1)
        if "error" in self.status:
            return ERROR, f"last update failed: {self.status['error']}", values
        return OK, self.status["state"], values

    _closing = False
    _examples_sent: Path | None = None

    def close(self) -> None:
        self._closing = True
        worker = self._worker
        if worker is not None and worker.poll() is None:
            worker.terminate()  # a clean stop; resumable from its last finished phase
            try:
                worker.wait(timeout=10.0)
            except subprocess.TimeoutExpired:
                worker.kill()


def main() -> int:
    return run_node(WorldModelNode)


if __name__ == "__main__":
    raise SystemExit(main())
