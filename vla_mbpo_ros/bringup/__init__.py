"""The one description of the launched graph.

For each profile (finetune, teleop, deploy): which nodes run, from which executable, with which
parameter files from config/, remappings, whether the whole graph stops when a node dies, and on
which machine each node runs when the graph is split (``machine:=robot`` on the robot workstation,
``machine:=trainer`` on the GPU server, no shared filesystem; ``all``, the default, is one machine).
Both ``ros2 launch vla_mbpo_ros <profile>.launch.py`` (launch/ -> ros_launch.py) and the pip-only
runner (``python -m vla_mbpo_ros.bringup <profile>``) are built from this module, so they start the
same nodes with the same arguments. Nothing here imports launch or rclpy.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

PACKAGE = "vla_mbpo_ros"
RESPAWN_DELAY_S = 1.0  # before a respawning node is started again


@dataclass(frozen=True)
class LaunchArgument:
    name: str
    default: str
    description: str
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class NodeSpec:
    name: str  # ROS node name
    executable: str  # vla_mbpo_ros/nodes/<executable>.py, installed as lib/vla_mbpo_ros/<executable>
    param_files: tuple[str, ...] = ()  # relative to config/, applied in order
    # (parameter, value template): templates are formatted with the launch arguments, e.g. "{output_dir}".
    parameters: tuple[tuple[str, str], ...] = ()
    remappings: tuple[tuple[str, str], ...] = ()
    required: bool = True  # the graph shuts down (non-zero) when a required node dies
    # A node that dies (non-zero exit, e.g. SIGKILL) is started again instead: for nodes whose state is
    # on disk and that resume from it (the recorder discards an unfinished episode, the world-model
    # node resumes its iteration). Exit code 0 still means "finished".
    respawn: bool = False
    when: tuple[tuple[str, tuple[str, ...]], ...] = ()  # started only if each launch argument has one of these values
    machine: str = "robot"  # robot (drivers, sync, executor, episode manager) or trainer (recorder, world model)


def only(**conditions: str | tuple[str, ...]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """``when`` condition: only(robot="sim"), only(robot="so101", cameras=("usb",))."""
    return tuple((arg, (values,) if isinstance(values, str) else tuple(values)) for arg, values in conditions.items())


LAUNCH_ARGUMENTS: tuple[LaunchArgument, ...] = (
    LaunchArgument("robot", "sim", "robot backend", ("sim", "so101", "ros2_control")),
    LaunchArgument("cameras", "usb", "camera drivers for robot:=so101: USB/V4L2 (OpenCV) or RealSense", ("usb", "realsense")),
    LaunchArgument("config", "", "site ROS parameter file (YAML) applied to every node last: it overrides everything"),
    LaunchArgument("output_dir", "outputs", "datasets, checkpoints and reports are written here"),
    LaunchArgument("world_model_device", "cpu", "torch device of the world-model training worker (cpu, cuda, cuda:N)"),
    LaunchArgument("machine", "all", "which part of a split graph to start here: the robot workstation's nodes, "
                   "the trainer's (recorder, world model), or all on one machine", ("all", "robot", "trainer")),
)


def derived_values(args: Mapping[str, str]) -> dict[str, str]:
    """Values the launch arguments imply: a split graph shares no filesystem, so the trainer serves
    new checkpoints over ROS instead of announcing file:// paths, and its signing key must be made and
    its public half copied to the robot by a person (docs/deployment.md); on one machine the
    world-model node creates the pair in ``<output_dir>/keys`` when there is none."""
    one_machine = args["machine"] == "all"
    return {"checkpoint_transfer": "file" if one_machine else "ros", "create_signing_key": str(one_machine).lower()}

# Drivers, one set per robot backend. ros2_control brings its own drivers and controllers, so no
# node of ours talks to the hardware there: our nodes use its topics (set in config:=).
def _drivers(*sim_param_files: str) -> tuple[NodeSpec, ...]:
    return (
        NodeSpec("sim_robot", "sim_robot", ("sim_robot.yaml", *sim_param_files), when=only(robot="sim")),
        # The real arm: LeRobot's SO-101 follower behind /joint_states and the arm command topics.
        NodeSpec("so101_driver", "so101_driver", ("so101_driver.yaml",), when=only(robot="so101")),
        *(
            NodeSpec(name, executable, (f"cameras/{profile}.yaml",), when=only(robot="so101", cameras=kind))
            for kind, executable, profile in (("usb", "opencv_camera", "so101_usb"), ("realsense", "realsense_camera", "so101_realsense"))
            for name in ("head_camera", "wrist_camera")
        ),
    )


_SYNC = NodeSpec("observation_sync", "observation_sync", ("observation_sync.yaml",))
_HARDWARE = only(robot=("so101", "ros2_control"))
# On hardware the operator's e-stop is a live source the executor requires (core.control.estop_source).
_ESTOP_SOURCE = NodeSpec("estop_source", "estop_source", ("estop_source.yaml",), when=_HARDWARE)
# The executor trusts checkpoints only from where the world-model node writes them, and only signed
# by the key whose private half the world-model node holds (core.policy.signing).
_KEYS = "{output_dir}/keys"
_EXECUTOR_PARAMETERS = (("trusted_checkpoint_roots", "['{output_dir}/finetune/checkpoints']"),
                        ("trusted_checkpoint_keys", f"['{_KEYS}/checkpoint_signing.pub']"))
# On the trainer in a split graph: it subscribes to the observations over the network and writes the
# dataset next to the world-model node that trains on it.


def _executor(*param_files: str, parameters: tuple[tuple[str, str], ...] = ()) -> tuple[NodeSpec, ...]:
    """The policy executor; on hardware it also requires a live e-stop source."""
    files = ("policy_executor.yaml", *param_files)
    return (
        NodeSpec("policy_executor", "policy_executor", files, parameters=parameters, when=only(robot="sim")),
        NodeSpec("policy_executor", "policy_executor", (*files, "policy_executor_hardware.yaml"), parameters=parameters,
                 when=_HARDWARE),
        _ESTOP_SOURCE,
    )


_RECORDER = NodeSpec("recorder", "recorder", ("recorder.yaml",), parameters=(("output_dir", "{output_dir}"),), machine="trainer",
                     respawn=True)
_OUTPUT_DIR = (("output_dir", "{output_dir}"),)


def _episode_manager(*param_files: str) -> tuple[NodeSpec, ...]:
    """On the sim it resets the scene itself; on hardware a person resets it and labels outcomes."""
    files = ("episode_manager.yaml", *param_files)
    return (
        NodeSpec("episode_manager", "episode_manager", files, parameters=_OUTPUT_DIR, when=only(robot="sim")),
        NodeSpec(
            "episode_manager", "episode_manager", (*files, "episode_manager_hardware.yaml"),
            parameters=_OUTPUT_DIR, when=_HARDWARE,
        ),
    )


PROFILES: dict[str, tuple[NodeSpec, ...]] = {
    # Drivers + sync + policy executor + recorder + episode manager + world model: the whole loop.
    "finetune": (
        *_drivers(),
        _SYNC,
        *_executor(parameters=_EXECUTOR_PARAMETERS),
        _RECORDER,
        *_episode_manager(),
        NodeSpec(
            "world_model_node",
            "world_model_node",
            ("world_model_node.yaml",),
            parameters=(("output_dir", "{output_dir}"), ("device", "{world_model_device}"),
                        ("checkpoint_transfer", "{checkpoint_transfer}"),
                        ("checkpoint_signing_key", f"{_KEYS}/checkpoint_signing.key"),
                        ("create_signing_key", "{create_signing_key}")),
            machine="trainer",
            respawn=True,
        ),
    ),
    # Demonstrations: drivers + sync + executor (operator targets only) + recorder + episode manager.
    # On the sim the scripted expert is the operator; on hardware the teleop node (joy, keyboard,
    # leader arm) is.
    "teleop": (
        *_drivers("sim_robot_expert.yaml"),
        _SYNC,
        *_executor("policy_executor_teleop.yaml"),
        _RECORDER,
        *_episode_manager("episode_manager_teleop.yaml"),
        NodeSpec("teleop", "teleop", ("teleop.yaml",), when=_HARDWARE),
    ),
    # LeRobot's CLIs drive the arm (plugins/: --robot.type=vla_mbpo_ros --teleop.type=vla_mbpo_ros): drivers
    # + executor (operator targets only). The operator device (the sim's expert, or the teleop node)
    # publishes to /vla_mbpo/operator/joint_targets, where LeRobot's teleoperator reads it; LeRobot's robot
    # sends the targets on to the gate's input and records the dataset itself.
    "lerobot": (
        *_drivers("sim_robot_lerobot.yaml"),
        *_executor("policy_executor_teleop.yaml"),
        NodeSpec("teleop", "teleop", ("teleop.yaml", "teleop_lerobot.yaml"), when=_HARDWARE),
    ),
    # Drivers + sync + safety-gated policy executor.
    "deploy": (
        *_drivers(),
        _SYNC,
        *_executor(parameters=_EXECUTOR_PARAMETERS),
    ),
}


@dataclass
class ResolvedNode:
    """A node with its parameter sources in precedence order: the package's files, then the values
    the bringup sets (``parameters``, typed), then the site files given with ``config:=``, which win."""

    name: str
    executable: str
    param_files: list[Path]
    parameters: dict[str, object] = field(default_factory=dict)
    site_files: list[Path] = field(default_factory=list)
    remappings: list[tuple[str, str]] = field(default_factory=list)
    required: bool = True
    respawn: bool = False

    @property
    def module(self) -> str:
        return f"{PACKAGE}.nodes.{self.executable}"


# The Fast DDS transports the package chooses (config/dds/fastdds_local.xml: shared memory sized for
# camera images). Fast DDS 2.x (Jazzy) reads the first variable, 3.x (Kilted) the second.
DDS_VARIABLES = ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE", "FASTDDS_BUILTIN_TRANSPORTS")


def dds_profile_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment variables that select the package's DDS profile, unless ``environ`` (default:
    this process's) already chooses transports: a site's own choice is kept."""
    environ = os.environ if environ is None else environ
    if any(environ.get(name) for name in DDS_VARIABLES):
        return {}
    profile = str(config_dir() / "dds" / "fastdds_local.xml")
    # Kilted's rmw warns on every process start when the Fast DDS 2.x name is set, so set only the one
    # the distribution reads; both when the distribution is unknown.
    fast_dds_2, fast_dds_3 = DDS_VARIABLES[:2]
    names = {"humble": [fast_dds_2], "jazzy": [fast_dds_2], "kilted": [fast_dds_3]}
    return dict.fromkeys(names.get(environ.get("ROS_DISTRO", ""), [fast_dds_2, fast_dds_3]), profile)


def discovery_warning(machine: str, environ: Mapping[str, str] | None = None) -> str:
    """A warning when a split graph's half would not discover the other machine ("" when fine)."""
    environ = os.environ if environ is None else environ
    scope = environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "")
    if machine == "all" or environ.get("ROS_STATIC_PEERS") or scope not in ("LOCALHOST", "OFF"):
        return ""
    return (f"machine:={machine} with ROS_AUTOMATIC_DISCOVERY_RANGE={scope}: the other machine's nodes will not be "
            "discovered; set SUBNET or ROS_STATIC_PEERS (docs/deployment.md)")


def config_dir() -> Path:
    """config/ of a source checkout when run from one, else the installed share directory."""
    source = Path(__file__).resolve().parents[2] / "config"
    if source.is_dir():
        return source
    from ament_index_python.packages import get_package_share_directory

    return Path(get_package_share_directory(PACKAGE)) / "config"


def parse_cli_arguments(tokens: Iterable[str]) -> dict[str, str]:
    """``name:=value`` tokens (as ros2 launch takes them) -> dict, with unknown names rejected."""
    known = {a.name for a in LAUNCH_ARGUMENTS}
    values: dict[str, str] = {}
    for token in tokens:
        name, sep, value = token.partition(":=")
        if not sep:
            raise ValueError(f"launch argument {token!r}: expected name:=value")
        if name not in known:
            raise ValueError(f"unknown launch argument {name!r}; known: {', '.join(sorted(known))}")
        values[name] = value
    return values


def resolve(profile: str, arguments: Mapping[str, str] | None = None, config: Path | None = None) -> list[ResolvedNode]:
    """The nodes of ``profile`` for the given launch arguments, with absolute parameter files."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}")
    args = {a.name: a.default for a in LAUNCH_ARGUMENTS}
    args.update(arguments or {})
    for argument in LAUNCH_ARGUMENTS:
        if argument.choices and args[argument.name] not in argument.choices:
            raise ValueError(
                f"launch argument {argument.name}:={args[argument.name]!r} is not one of {', '.join(argument.choices)}"
            )
    args.update(derived_values(args))
    config = config or config_dir()
    extra = [Path(args["config"]).resolve()] if args["config"] else []
    for path in extra:
        if not path.is_file():
            raise ValueError(f"launch argument config:={path}: file not found")
    nodes: list[ResolvedNode] = []
    for spec in PROFILES[profile]:
        if any(args[arg] not in values for arg, values in spec.when):
            continue
        if args["machine"] != "all" and spec.machine != args["machine"]:
            continue
        nodes.append(
            ResolvedNode(
                name=spec.name,
                executable=spec.executable,
                param_files=[config / f for f in spec.param_files],
                parameters={param: yaml.safe_load(template.format(**args)) for param, template in spec.parameters},
                site_files=extra,
                remappings=list(spec.remappings),
                required=spec.required,
                respawn=spec.respawn,
            )
        )
        check_site_types(nodes[-1])
    return nodes


def write_parameters(node: ResolvedNode, directory: Path) -> Path | None:
    """The bringup's values for ``node`` as a parameter file in ``directory`` (None when it sets none).
    A file, not ``-p``: rcl applies ``-p`` overrides after every file, and a site file must win."""
    if not node.parameters:
        return None
    path = Path(directory) / f"{node.name}.bringup.yaml"
    path.write_text(yaml.safe_dump({node.name: {"ros__parameters": node.parameters}}))
    return path


def _node_parameters(path: Path, node: str) -> dict[str, object]:
    """The flattened (``a.b``) parameters a ROS 2 params file gives ``node`` (its own and ``/**``)."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    flat: dict[str, object] = {}

    def walk(prefix: str, value: object) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}{key}.", item)
        else:
            flat[prefix[:-1]] = value

    for key in ("/**", node, f"/{node}"):
        section = data.get(key) if isinstance(data, dict) else None
        if isinstance(section, dict):
            walk("", section.get("ros__parameters") or {})
    return flat


def _same_kind(default: object, value: object) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return type(default) is type(value)
    if isinstance(default, float):
        return isinstance(value, (int, float))  # 3 means 3.0
    if isinstance(default, list):
        return isinstance(value, list) and (not default or not value or _same_kind(default[0], value[0]))
    return default is None or type(default) is type(value)


def check_site_types(node: ResolvedNode) -> None:
    """ValueError naming file, node, parameter and type when a site file gives a parameter of the
    package's files a value of another type: rcl would keep the package's value without a word."""
    defaults: dict[str, tuple[object, Path]] = {}
    for path in node.param_files:
        defaults.update({k: (v, path) for k, v in _node_parameters(path, node.name).items()})
    for site in node.site_files:
        for key, value in _node_parameters(site, node.name).items():
            if key in defaults and not _same_kind(defaults[key][0], value):
                default, path = defaults[key]
                raise ValueError(
                    f"config:={site}: node {node.name}: parameter {key}: expected {type(default).__name__} "
                    f"(as {default!r} in {path.name}), got {type(value).__name__} {value!r}"
                )


def ros_arguments(node: ResolvedNode, parameters_file: Path | None = None) -> list[str]:
    """The ``--ros-args`` a launcher passes to the node executable (same as launch_ros builds):
    the package's parameter files, the bringup's (``write_parameters``), then the site files."""
    argv = ["--ros-args", "-r", f"__node:={node.name}"]
    files = [*node.param_files, *([parameters_file] if parameters_file else []), *node.site_files]
    for path in files:
        argv += ["--params-file", str(path)]
    for source, target in node.remappings:
        argv += ["-r", f"{source}:={target}"]
    return argv
