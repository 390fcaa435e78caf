"""The bringup description, the launch files built from it, and the pip-only runner."""

from __future__ import annotations

import ast
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from vla_mbpo_ros import bringup

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


def test_extra_config_file_is_applied_last_to_every_node(tmp_path):
    extra = tmp_path / "site.yaml"
    extra.write_text("/**:\n  ros__parameters: {}\n")
    for node in bringup.resolve("teleop", {"robot": "so101", "config": str(extra)}):
        assert node.param_files[-1] == extra
        args = bringup.ros_arguments(node)
        assert args[:3] == ["--ros-args", "-r", f"__node:={node.name}"]
        assert args[-2:] == ["--params-file", str(extra)] or str(extra) in args


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

    runner = _runner(*RUNNER_PROFILE)
    try:
        children = wait_until(lambda: len(_node_processes(runner)) >= 2 and _node_processes(runner), 60.0, "node processes")
        victim_name, victim = sorted(children.items())[0]
        time.sleep(1.0)
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
