"""The bringup description, the launch files built from it, and the pip-only runner."""

from __future__ import annotations

import ast
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from ros_harness import wait_until

from vla_mbpo_ros import bringup
from vla_mbpo_ros.core.util.process import launcher_environment

REPO = Path(__file__).resolve().parents[1]
LAUNCH_FILES = sorted((REPO / "launch").glob("*.launch.py"))


def _profile_of(launch_file: Path) -> str:
    """The profile a launch file builds (parsed, not imported: launch is not installable here)."""
    tree = ast.parse(launch_file.read_text())
    functions = {f.name: f for f in tree.body if isinstance(f, ast.FunctionDef)}
    assert "generate_launch_description" in functions, f"{launch_file.name}: no generate_launch_description()"
    calls = [
        node
        for node in ast.walk(functions["generate_launch_description"])
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "generate_profile_launch"
    ]
    assert len(calls) == 1, f"{launch_file.name}: must build its nodes with generate_profile_launch(<profile>)"
    imports = [n for n in tree.body if isinstance(n, ast.ImportFrom) and n.module == "vla_mbpo_ros.bringup.ros_launch"]
    assert imports, f"{launch_file.name}: must import generate_profile_launch from the bringup description"
    return ast.literal_eval(calls[0].args[0])


def test_every_profile_has_a_launch_file_built_from_the_description():
    assert {_profile_of(f) for f in LAUNCH_FILES} == set(bringup.PROFILES)
    for launch_file in LAUNCH_FILES:
        assert launch_file.name == f"{_profile_of(launch_file)}.launch.py"


@pytest.mark.parametrize("profile", sorted(bringup.PROFILES))
@pytest.mark.parametrize("robot", ["sim", "so101", "ros2_control"])
def test_every_executable_and_parameter_file_exists(profile, robot):
    for node in bringup.resolve(profile, {"robot": robot}):
        module = REPO / "vla_mbpo_ros" / "nodes" / f"{node.executable}.py"
        assert module.is_file(), f"{profile}/{node.name}: executable {node.executable} has no module {module}"
        assert "def main(" in module.read_text(), f"{module} has no main()"
        for path in node.param_files:
            assert path.is_file(), f"{profile}/{node.name}: parameter file {path} missing"


def test_node_names_are_unique_within_each_profile():
    for profile, specs in bringup.PROFILES.items():
        for robot in ("sim", "so101", "ros2_control"):
            names = [n.name for n in bringup.resolve(profile, {"robot": robot})]
            assert len(names) == len(set(names)), f"{profile} robot:={robot} has duplicate node names {names}"


def test_launch_arguments_are_validated_with_clear_messages(tmp_path):
    with pytest.raises(ValueError, match="robot:='ur5' is not one of"):
        bringup.resolve("deploy", {"robot": "ur5"})
    with pytest.raises(ValueError, match="unknown launch argument 'robto'"):
        bringup.parse_cli_arguments(["robto:=sim"])
    with pytest.raises(ValueError, match="expected name:=value"):
        bringup.parse_cli_arguments(["robot=sim"])
    with pytest.raises(ValueError, match="unknown profile"):
        bringup.resolve("finetuen")
    with pytest.raises(ValueError, match="config:=.*not found"):
        bringup.resolve("deploy", {"config": str(tmp_path / "missing.yaml")})


@pytest.mark.parametrize("profile", sorted(bringup.PROFILES))
def test_machine_split_puts_every_node_on_exactly_one_machine(profile):
    names = lambda machine: {n.name for n in bringup.resolve(profile, {"robot": "so101", "machine": machine})}  # noqa: E731
    robot, trainer = names("robot"), names("trainer")
    assert robot | trainer == names("all") and not robot & trainer
    # (The lerobot profile has no sync node: LeRobot's robot reads the cameras itself.)
    on_robot = {"policy_executor", "observation_sync"} & names("all")
    assert "policy_executor" in on_robot and on_robot <= robot and not {"recorder", "world_model_node"} & robot


def test_a_split_trainer_serves_checkpoints_over_ros_and_one_machine_uses_paths():
    def transfer(machine: str) -> str:
        nodes = bringup.resolve("finetune", {"machine": machine})
        return next(n for n in nodes if n.name == "world_model_node").parameters["checkpoint_transfer"]

    assert transfer("all") == "file" and transfer("trainer") == "ros"
    assert "SUBNET" in bringup.discovery_warning("robot", {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"})
    assert not bringup.discovery_warning("robot", {"ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET"})
    assert not bringup.discovery_warning("all", {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"})


def test_signing_keys_liveness_and_respawn_are_wired_per_machine_and_robot():
    def node(profile: str, name: str, **args) -> bringup.ResolvedNode:
        return next(n for n in bringup.resolve(profile, args) if n.name == name)

    # One machine: the world-model node creates the pair; the executor trusts its public half.
    trainer = node("finetune", "world_model_node", output_dir="/o")
    assert trainer.parameters["checkpoint_signing_key"] == "/o/keys/checkpoint_signing.key"
    assert trainer.parameters["create_signing_key"] is True
    assert node("finetune", "policy_executor", output_dir="/o").parameters["trusted_checkpoint_keys"] == \
        ["/o/keys/checkpoint_signing.pub"]
    # A split graph never makes keys: a person copies the public key to the robot.
    assert node("finetune", "world_model_node", machine="trainer").parameters["create_signing_key"] is False
    # Hardware: a live e-stop source, required by the executor; the sim needs none.
    for profile in ("finetune", "teleop", "deploy"):
        hardware = {n.name: n for n in bringup.resolve(profile, {"robot": "so101"})}
        assert "estop_source" in hardware
        assert any(f.name == "policy_executor_hardware.yaml" for f in hardware["policy_executor"].param_files)
        sim = {n.name: n for n in bringup.resolve(profile, {"robot": "sim"})}
        assert "estop_source" not in sim
        assert not any(f.name == "policy_executor_hardware.yaml" for f in sim["policy_executor"].param_files)
    # The nodes that resume from disk are respawned; the control path is not (its death stops the graph).
    respawning = {n.name for n in bringup.resolve("finetune") if n.respawn}
    assert respawning == {"recorder", "world_model_node"}


def _start(node: bringup.ResolvedNode, log: Path) -> subprocess.Popen:
    """The node executable with exactly the arguments the runner passes it."""
    argv = [sys.executable, "-m", node.module, *bringup.ros_arguments(node, bringup.write_parameters(node, log.parent))]
    return subprocess.Popen(argv, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=launcher_environment())


def _parameter(ros, node: str, name: str):
    from rcl_interfaces.srv import GetParameters
    from rclpy.parameter import parameter_value_to_python

    response = ros.call(GetParameters, f"/{node}/get_parameters", GetParameters.Request(names=[name]))
    return parameter_value_to_python(response.values[0])


@pytest.mark.ros
def test_a_site_config_overrides_what_the_bringup_sets_and_ints_count_as_floats(ros, tmp_path):
    site = tmp_path / "site.yaml"
    root = tmp_path / "site_checkpoints"
    site.write_text(f"policy_executor:\n  ros__parameters:\n    trusted_checkpoint_roots: ['{root}']\n"
                    f"    validation_limit_margin: 0\n")  # an integer where a float is declared
    (node,) = [n for n in bringup.resolve("deploy", {"output_dir": str(tmp_path / "out"), "config": str(site)})
               if n.name == "policy_executor"]
    assert "trusted_checkpoint_roots" in node.parameters  # the bringup sets it, and the site file must win
    process = _start(node, tmp_path / "executor.log")
    try:
        wait_until(lambda: "policy_executor" in ros.node_names(), what="the executor to come up")
        assert _parameter(ros, "policy_executor", "trusted_checkpoint_roots") == [str(root)]
        assert _parameter(ros, "policy_executor", "validation_limit_margin") == 0.0
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=15)


def test_a_site_value_of_the_wrong_type_is_refused_naming_file_node_parameter_and_type(tmp_path):
    """rcl would silently keep the package's value for a site value of another type: the bringup
    (both the runner and ros2 launch) refuses the site file instead."""
    site = tmp_path / "site.yaml"
    site.write_text("recorder:\n  ros__parameters:\n    min_free_disk_mb: lots\n")
    with pytest.raises(ValueError, match=r"config:=.*site.yaml: node recorder: parameter min_free_disk_mb: "
                                         r"expected float \(as 2048.0 in recorder.yaml\), got str 'lots'"):
        bringup.resolve("teleop", {"config": str(site)})
    runner = _runner("teleop", f"config:={site}")
    output, _ = runner.communicate(timeout=60)
    assert runner.returncode == 2 and "parameter min_free_disk_mb: expected float" in output


@pytest.mark.ros
def test_a_node_given_a_parameter_of_the_wrong_type_exits_with_one_line_naming_it(tmp_path):
    params = tmp_path / "recorder.yaml"
    params.write_text("recorder:\n  ros__parameters:\n    min_free_disk_mb: lots\n")
    node = bringup.ResolvedNode("recorder", "recorder", param_files=[params])
    log = tmp_path / "recorder.log"
    assert _start(node, log).wait(timeout=60) == 2
    errors = [line for line in log.read_text().splitlines() if "error" in line.lower()]
    assert errors == ["[error] configuration: node recorder: parameter min_free_disk_mb: expected a number, got str 'lots'"]


def _runner(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "vla_mbpo_ros.bringup", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _node_processes(runner: subprocess.Popen) -> dict[str, psutil.Process]:
    found = {}
    for child in psutil.Process(runner.pid).children():
        for arg in child.cmdline():
            if arg.startswith("__node:="):
                found[arg.split(":=", 1)[1]] = child
    return found


# The default sim backend: robot:=so101 refuses to start without the arm's serial port.
RUNNER_PROFILE = ("teleop", "robot:=sim")


@pytest.mark.ros
def test_runner_starts_the_profile_and_stops_cleanly_on_sigint(ros):
    from ros_harness import wait_until

    expected = {n.name for n in bringup.resolve(RUNNER_PROFILE[0], bringup.parse_cli_arguments(RUNNER_PROFILE[1:]))}
    runner = _runner(*RUNNER_PROFILE)
    try:
        wait_until(lambda: expected <= ros.node_names(), 60.0, f"nodes {sorted(expected)} on the ROS graph")
        children = _node_processes(runner)
        assert set(children) == expected
        runner.send_signal(signal.SIGINT)
        output, _ = runner.communicate(timeout=60)
    finally:
        if runner.poll() is None:
            runner.kill()
    assert runner.returncode == 0, output
    assert "all nodes exited cleanly" in output
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in children.values())
    wait_until(lambda: not (expected & ros.node_names()), 30.0, "nodes gone from the graph")


@pytest.mark.ros
def test_runner_exits_non_zero_naming_a_required_node_that_died(ros):
    from ros_harness import wait_until

    expected = {n.name for n in bringup.resolve(RUNNER_PROFILE[0], bringup.parse_cli_arguments(RUNNER_PROFILE[1:]))}
    runner = _runner(*RUNNER_PROFILE)
    try:
        # Every node started (the runner watches them all from then on), so all of them must be shut down.
        children = wait_until(lambda: set(_node_processes(runner)) == expected and _node_processes(runner), 60.0,
                              f"node processes {sorted(expected)}")
        victim_name, victim = sorted(children.items())[0]
        victim.kill()
        output, _ = runner.communicate(timeout=60)
    finally:
        if runner.poll() is None:
            runner.kill()
    assert runner.returncode == 1, output
    assert f"required node {victim_name} exited with code -9" in output
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in children.values())


@pytest.mark.ros
def test_nodes_exit_when_the_runner_is_killed(ros):
    """A runner killed with SIGKILL (no chance to forward anything) leaves no orphan node behind."""
    from ros_harness import wait_until

    runner = _runner(*RUNNER_PROFILE)
    try:
        children = wait_until(lambda: len(_node_processes(runner)) >= 3 and _node_processes(runner), 60.0, "node processes")
        runner.kill()
        runner.wait(timeout=10)
        gone = lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in children.values())  # noqa: E731
        wait_until(gone, 30.0, f"nodes {sorted(children)} to exit after their runner died")
    finally:
        for process in psutil.Process().children(recursive=True):
            process.kill()


def test_hardware_episode_manager_waits_for_a_person():
    """On the sim the manager resets scene and latch itself; on hardware neither, and a person labels."""
    import yaml

    def parameters(robot: str) -> dict:
        (node,) = [n for n in bringup.resolve("finetune", {"robot": robot}) if n.name == "episode_manager"]
        merged: dict = {}
        for path in node.param_files:
            merged.update(yaml.safe_load(path.read_text())["episode_manager"]["ros__parameters"])
        return merged

    sim, hardware = parameters("sim"), parameters("so101")
    assert sim["reset_service"] == "/sim/reset" and sim["reset_estop_in_sim"] is True
    assert hardware["reset_service"] == "" and hardware["reset_estop_in_sim"] is False
    assert hardware["label_source"] == "operator"


@pytest.mark.parametrize(("distro", "expected"), [
    ("jazzy", {"FASTRTPS_DEFAULT_PROFILES_FILE"}),
    ("kilted", {"FASTDDS_DEFAULT_PROFILES_FILE"}),
    ("", {"FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE"}),
])
def test_the_dds_profile_is_set_under_the_name_the_distribution_reads(distro, expected):
    chosen = bringup.dds_profile_environment({"ROS_DISTRO": distro})
    assert set(chosen) == expected
    assert all(Path(path).name == "fastdds_local.xml" and Path(path).is_file() for path in chosen.values())


def test_a_site_choice_of_dds_transports_is_kept():
    assert bringup.dds_profile_environment({"ROS_DISTRO": "jazzy", "FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA"}) == {}
