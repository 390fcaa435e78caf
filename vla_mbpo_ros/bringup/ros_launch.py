"""launch_ros front end of the bringup description (used by launch/*.launch.py on a ROS workstation)."""

from __future__ import annotations

from vla_mbpo_ros.bringup import LAUNCH_ARGUMENTS, PACKAGE, RESPAWN_DELAY_S, dds_profile_environment, discovery_warning, resolve


def generate_profile_launch(profile: str):
    from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction, Shutdown
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    from launch import LaunchDescription

    def nodes(context):
        args = {a.name: LaunchConfiguration(a.name).perform(context) for a in LAUNCH_ARGUMENTS}
        warning = discovery_warning(args["machine"])
        warnings = [LogInfo(msg=f"warning: {warning}")] if warning else []
        return warnings + [
            Node(
                package=PACKAGE,
                executable=node.executable,
                name=node.name,
                parameters=[*(str(p) for p in node.param_files), node.parameters, *(str(p) for p in node.site_files)],
                remappings=node.remappings,
                output="screen",
                additional_env=dds_profile_environment(),
                respawn=node.respawn,
                respawn_delay=RESPAWN_DELAY_S if node.respawn else None,
                on_exit=Shutdown(reason=f"required node {node.name} exited") if node.required and not node.respawn else None,
            )
            for node in resolve(profile, args)
        ]

    declared = [
        DeclareLaunchArgument(a.name, default_value=a.default, description=a.description, choices=list(a.choices) or None)
        for a in LAUNCH_ARGUMENTS
    ]
    return LaunchDescription([*declared, OpaqueFunction(function=nodes)])
