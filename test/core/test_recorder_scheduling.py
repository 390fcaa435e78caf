"""Saving an episode must leave the recorder's scheduling policy as it was.

SVT-AV1 (LeRobot's default video codec) raises its calling thread to SCHED_FIFO 99 when the process
may (root). A recorder left like that, and every process it starts, preempts the control loop and
can starve a 2-core robot computer (seen here: load average 70).
"""

from __future__ import annotations

import os

from sim_data import record_sim_episodes


def test_video_encoding_does_not_leave_the_process_real_time(tmp_path):
    before = (os.sched_getscheduler(0), os.sched_getparam(0))
    record_sim_episodes(tmp_path / "dataset", seeds=[0], codec="libsvtav1")
    assert (os.sched_getscheduler(0), os.sched_getparam(0)) == before
