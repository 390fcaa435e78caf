"""Thin rclpy nodes: parameters, topics, QoS, timers and threads around vla_mbpo_ros.core.

Every module here with a ``main()`` is one executable (installed as lib/vla_mbpo_ros/<module>).
"""
