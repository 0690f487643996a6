"""Control work off the live path: one helper process that parses and loads while a take plays.

Parsing a MIDI file or opening a session makes tens of thousands of Python
objects. In the process that plays a take that is enough to set off full
garbage collections (100 ms and more with torch loaded, the interpreter
lock held throughout), and the parsing itself keeps the lock from the
take's threads 5 ms at a time: hits come late and the agent misses its
deadlines. A
:class:`Worker` runs such a job in a separate process, at the lowest
priority (Linux ``SCHED_IDLE``: only on CPU time the take does not want),
and hands back only the small result.

The process is a fresh interpreter (``python -c``, calling :func:`_worker`),
never a ``fork`` of the service, whose JACK, PortAudio and torch threads a
forked child would inherit half-way; nor multiprocessing's ``spawn``, which
runs the parent's main script again in the child (a script that starts the
service without a main-module guard would fail). Jobs and results travel
pickled over a socket pair (:class:`multiprocessing.connection.Connection`).

Bounds: one process per worker, started on the first job and ending by
itself after ``idle_s`` without one (or with the service); one job at a
time; a job that takes longer than ``timeout_s`` has its process killed. A
job that fails, a process that dies or hangs: :class:`WorkerError` with one
line saying so, never a stalled caller. The next job starts a new process.

Examples
--------
>>> worker = Worker(timeout_s=30)        # doctest: +SKIP
>>> worker.run(math.hypot, 3.0, 4.0)     # doctest: +SKIP
5.0
>>> worker.close()                       # doctest: +SKIP
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from multiprocessing.connection import Connection, Pipe

from rolypoly.errors import RolypolyError
from rolypoly.errors import one_line as _one_line

#: A job not done by then is given up and its process killed.
TIMEOUT_S = 120.0
#: A worker process ends after this long without a job.
IDLE_S = 300.0
#: Niceness of the worker process where it cannot run as SCHED_IDLE.
NICE = 19
#: Exit code of a worker that ended because it was idle (not a crash).
_IDLE_EXIT = 0


class WorkerError(RolypolyError):
    """A job the worker process could not do: its one-line reason."""


def _lowest_priority(pid: int = 0) -> None:
    """Run process ``pid`` (0: this one) only on CPU time nothing else wants (Linux SCHED_IDLE;
    else nice 19).

    A take's threads then get the CPU the moment they wake, even on a
    machine whose cores are all busy.
    """
    try:
        os.sched_setscheduler(pid, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        try:
            os.setpriority(os.PRIO_PROCESS, pid, NICE)
        except OSError:
            pass


def _worker(fd: int, idle_s: float) -> None:
    """The worker process's program: jobs from the socket ``fd`` (see :meth:`Worker._ensure`)."""
    _serve(Connection(fd), idle_s)


def _serve(conn, idle_s: float) -> None:
    """Body of the worker process: run jobs from ``conn`` until idle, closed or told to stop."""
    _lowest_priority()
    try:
        sys.path[:0] = [p for p in conn.recv() if p not in sys.path]  # the service's import path
    except (EOFError, OSError):
        return
    while True:
        try:
            if not conn.poll(idle_s):
                return  # idle: exit code _IDLE_EXIT
            job = conn.recv()
        except (EOFError, OSError):  # the service has gone
            return
        if job is None:
            return
        fn, args = job
        try:
            reply = ("ok", fn(*args))
        except RolypolyError as e:
            reply = ("rejected", _one_line(e))
        except BaseException as e:  # noqa: BLE001 -- any failure is answered, the worker goes on
            reply = ("failed", f"{type(e).__name__}: {_one_line(e)}")
        try:
            conn.send(reply)
        except Exception as e:  # a result that does not pickle
            conn.send(("failed", f"cannot send the result back: {_one_line(e)}"))


class Worker:
    """One helper process for jobs that must not run beside a take (see module docstring).

    Parameters
    ----------
    timeout_s : seconds a job may take, process start included
    idle_s : the process ends after this long without a job
    """

    def __init__(self, *, timeout_s: float = TIMEOUT_S, idle_s: float = IDLE_S):
        self.timeout_s, self.idle_s = float(timeout_s), float(idle_s)
        self._process: subprocess.Popen | None = None
        self._conn: Connection | None = None
        self._lock = threading.Lock()  # one job at a time
        self.started = 0               # processes started so far

    @property
    def pid(self) -> int | None:
        """The worker process's id while it runs."""
        p = self._process
        return p.pid if p is not None and p.poll() is None else None

    def run(self, fn, *args):
        """``fn(*args)`` in the worker process; its result.

        ``fn`` and ``args`` must pickle (``fn`` a module-level function).

        Raises
        ------
        RolypolyError
            The job raised one: the same line.
        WorkerError
            The job failed otherwise, its process died, or it took longer than ``timeout_s``.
        """
        with self._lock:
            for attempt in (0, 1):
                try:
                    self._ensure()
                    self._conn.send((fn, args))
                    if not self._conn.poll(self.timeout_s):
                        self._kill()
                        raise WorkerError(f"gave up after {self.timeout_s:g} s: the job took too long "
                                          "(its process was stopped)")
                    status, value = self._conn.recv()
                except (EOFError, OSError, BrokenPipeError):
                    code = self._reap()
                    if code == _IDLE_EXIT and attempt == 0:
                        continue  # it ended, idle, just as the job came: a new one takes it
                    raise WorkerError(f"the worker process died (exit code {code})") from None
                if status == "ok":
                    return value
                raise (RolypolyError if status == "rejected" else WorkerError)(value)

    def _ensure(self) -> None:
        if self._process is not None and self._process.poll() is None:
            return
        self._reap()
        parent, child = Pipe()
        # One thread each for BLAS and torch: the other core belongs to the take.
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
        try:
            process = subprocess.Popen(
                [sys.executable, "-c", f"from {__name__} import _worker; _worker({child.fileno()}, {self.idle_s!r})"],
                pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=env)
        except OSError as e:
            parent.close()
            raise WorkerError(f"cannot start the worker process ({_one_line(e)})") from None
        finally:
            child.close()
        # At once, not only when the child gets there: a service playing at real-time priority
        # would otherwise lend it that priority while Python starts.
        _lowest_priority(process.pid)
        self._process, self._conn = process, parent
        self.started += 1
        parent.send(list(sys.path))

    def _kill(self) -> None:
        if self._process is not None:
            self._process.kill()
        self._reap()

    def _reap(self, wait_s: float = 5.0):
        """Forget the process, killed if it has not ended within ``wait_s``; its exit code (None: none)."""
        process, conn = self._process, self._conn
        self._process = self._conn = None
        if conn is not None:
            conn.close()
        if process is None:
            return None
        try:
            return process.wait(wait_s)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()

    def close(self, timeout: float = 10.0) -> None:
        """End the worker process: after the running job, or killed after ``timeout`` s."""
        if not self._lock.acquire(timeout=timeout):
            process = self._process
            if process is not None:
                process.kill()  # the job's caller sees the process die: a WorkerError
            if not self._lock.acquire(timeout=timeout):
                return
        try:
            if self._conn is not None:
                try:
                    self._conn.send(None)
                except OSError:
                    pass
            self._reap(wait_s=1.0)  # an idle worker ends at once; one still starting is killed
        finally:
            self._lock.release()

