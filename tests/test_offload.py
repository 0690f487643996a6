"""The helper process that loads and parses while a take plays: results, failures, deaths, hangs, bounds."""
from __future__ import annotations

import math
import os
import threading
import time

import pytest

from rolypoly.errors import RolypolyError, ScoreError
from rolypoly.realtime.offload import Worker, WorkerError
from rolypoly.score import load_score


@pytest.fixture
def worker():
    w = Worker(timeout_s=60.0)
    yield w
    w.close()


def test_a_job_runs_in_another_process_and_returns_its_result(worker):
    assert worker.run(math.hypot, 3.0, 4.0) == 5.0
    pid = worker.pid
    assert pid is not None and pid != os.getpid()
    assert worker.run(os.getpid) == pid                 # the same process for the next job
    assert worker.started == 1


def test_a_refusal_keeps_its_line_and_a_failure_says_what_failed(worker, tmp_path):
    (tmp_path / "broken.mid").write_bytes(b"not midi")
    with pytest.raises(RolypolyError, match="not a readable Standard MIDI File") as e:
        worker.run(load_score, tmp_path / "broken.mid")
    assert not isinstance(e.value, WorkerError)        # the job's own refusal, as it would be here
    with pytest.raises(ScoreError):
        load_score(tmp_path / "broken.mid")
    with pytest.raises(WorkerError, match="^ValueError: invalid literal"):
        worker.run(int, "x")
    assert worker.run(math.hypot, 6.0, 8.0) == 10.0 and worker.started == 1  # the worker goes on


def test_a_worker_that_dies_is_an_error_and_the_next_job_gets_a_new_one(worker):
    first = worker.run(os.getpid)
    with pytest.raises(WorkerError, match=r"died \(exit code 3\)"):
        worker.run(os._exit, 3)
    assert worker.pid is None
    assert worker.run(os.getpid) != first and worker.started == 2


def test_a_job_that_hangs_is_given_up_and_its_process_stopped(worker):
    worker.timeout_s = 1.0
    worker.run(math.hypot, 1.0, 1.0)  # started: the timeout is the job's alone
    pid = worker.pid
    start = time.monotonic()
    with pytest.raises(WorkerError, match="gave up after 1 s"):
        worker.run(time.sleep, 30)
    assert time.monotonic() - start < 10
    assert worker.pid is None and not _alive(pid)
    assert worker.run(math.hypot, 3.0, 4.0) == 5.0


def test_an_idle_worker_ends_by_itself_and_comes_back_when_needed():
    worker = Worker(idle_s=0.3)
    try:
        pid = worker.run(os.getpid)
        deadline = time.monotonic() + 30
        while _alive(pid):
            assert time.monotonic() < deadline, "the idle worker did not end"
            time.sleep(0.05)
        assert worker.run(math.hypot, 3.0, 4.0) == 5.0 and worker.started == 2
    finally:
        worker.close()


def test_close_ends_the_process_even_in_the_middle_of_a_job(worker):
    worker.run(math.hypot, 1.0, 1.0)
    pid = worker.pid
    failed = []

    def job():
        try:
            worker.run(time.sleep, 30)
        except WorkerError as e:
            failed.append(str(e))

    thread = threading.Thread(target=job)
    thread.start()
    time.sleep(0.3)
    worker.close(timeout=0.5)
    thread.join(10)
    assert failed and "died" in failed[0] and not _alive(pid)
    worker.close()  # twice is fine


def test_the_worker_runs_at_the_lowest_priority(worker):
    policy = worker.run(os.sched_getscheduler, 0)
    assert policy == os.SCHED_IDLE or worker.run(os.nice, 0) > 0


def _alive(pid) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (ended, not yet reaped) counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
