"""Run the first open of each file in a worker process, so a decoder that crashes or hangs on a
corrupt file costs that file, never the caller.

A watchdog thread cannot help here: decord throws ``std::bad_alloc`` on some corrupt AVIs and the
process aborts (SIGABRT), and a decoder stuck in native code cannot be stopped from Python.
`IsolatedPool` keeps ``jobs`` worker processes (forked from a forkserver that has imported the
decoders once, so a replacement starts in milliseconds), hands each one path at a time over a
pipe, and waits with a deadline. A worker that dies (a signal or an exit) or gives no answer in
time is killed and replaced, and the file is reported with the reason: ``decoder crashed: SIGABRT``
or ``decoder hung: no answer in 60 s``. Workers also run under an address-space limit, so a file
that makes a decoder allocate without bound fails in its worker rather than exhausting the
machine.

A worker says it is ready before it takes a file, so one that dies or stalls before that is not
blamed on a file: it is `WorkerStartError`. The usual cause is a script without an
``if __name__ == "__main__":`` guard: Python prepares each worker by importing the script that
started it, which then runs the script's own code again (and here, finds out and stops at once).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import resource
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait

from ttt_mm.data.decode import guard
from ttt_mm.processes.alive import end_with, remove_left_by_gone, scoped
from ttt_mm.processes.environment import environment, working_directory

log = logging.getLogger(__name__)

PRELOAD = ["ttt_mm.data.decode"]
"""Imported once by the forkserver, so workers start with the decoders loaded."""
WORKER_NAME = "ttt-mm-probe"
STDERR_PREFIX = scoped("ttt-mm-probe-stderr")
"""Where each worker's stderr goes: ``<tmp>/<prefix>-<pid of the pool's process>-....stderr``."""
READY = "ttt-mm-worker-ready"
STARTUP_TIMEOUT = 120.0
"""Seconds a worker may take to start (its first files wait that long at most before their own timeout)."""
UNGUARDED_SCRIPT = (
    'a script that uses ttt_mm must keep its code under `if __name__ == "__main__":`: decoders run in '
    "worker processes, and Python prepares each one by importing the script that started it, which runs that code"
)
"""What a worker that does not start usually means (the others: a machine out of memory or far too busy)."""
SCRIPT_FROM_STDIN = (
    "a script read from standard input (python - < script.py, or a heredoc) cannot start decoder workers: "
    "Python prepares each by reading the script that started it again, from its file; run it as a file"
)


def _why_workers_fail() -> str:
    """What a worker that did not start most likely means here: a script from standard input, which no
    worker can read, or one whose code is not guarded (`UNGUARDED_SCRIPT`)."""
    main = getattr(sys.modules.get("__main__"), "__file__", None)
    return SCRIPT_FROM_STDIN if main == "<stdin>" else f"usually {UNGUARDED_SCRIPT}"


class WorkerStartError(RuntimeError):
    """A worker process died or stalled before it could take a file: not a property of any file."""


_forkserver_started_by: int | None = None  # the process that started it (it outlives each pool): a fork's parent


def start_forkserver() -> None:
    """Starts multiprocessing's forkserver (once per process) with this process's import path.

    Python before 3.12.8 starts it as ``python -c ...`` without passing ``sys.path`` on (CPython
    gh-117378), so its preloaded imports search the working directory first: another checkout of
    ttt_mm there would be imported in place of the one running, and the workers would fail to start.
    The path goes by the environment instead, and the server starts in the folder that holds the
    running ttt_mm, so that the working directory it searches first has that one (``PYTHONSAFEPATH``
    keeps it out from Python 3.11, also when a server that died is started again, where the working
    directory is left alone). Each worker then moves to the caller's working directory, as
    multiprocessing prepares it. The caller's own working directory changes only for the moment its
    first pool starts the server, before any thread of ours reads files."""
    global _forkserver_started_by
    from multiprocessing import forkserver

    import ttt_mm

    if _forkserver_started_by not in (None, os.getpid()):
        _forget_inherited_server(forkserver._forkserver)
    path = [os.path.abspath(p or os.curdir) for p in sys.path if isinstance(p, str)]
    home = os.path.dirname(os.path.dirname(os.path.abspath(ttt_mm.__file__)))
    started_here = _forkserver_started_by == os.getpid()  # (then running, or a server that died: rare)
    where = contextlib.nullcontext() if started_here else working_directory(home)
    with environment({"PYTHONPATH": os.pathsep.join(path), "PYTHONSAFEPATH": "1"}), where:
        forkserver.ensure_running()
    _forkserver_started_by = os.getpid()


def _forget_inherited_server(server) -> None:
    """A process forked from one that started the forkserver inherits multiprocessing's record of that
    server, whose check that the server still runs (``waitpid``) then fails: it is not this process's
    child (``ChildProcessError``, from a user's ``multiprocessing.Pool`` of embedders, say). This process
    forgets it and starts its own; its copy of the server's keep-alive pipe is closed, so that the
    server still ends with the process that started it."""
    alive = getattr(server, "_forkserver_alive_fd", None)
    if alive is not None:
        with contextlib.suppress(OSError):
            os.close(alive)
    for name in ("_forkserver_address", "_forkserver_alive_fd", "_forkserver_pid"):
        setattr(server, name, None)


RAN_THE_SCRIPT = 86
"""The exit status of a worker that `refuse_in_a_worker` stopped: its caller says why, once."""


def refuse_in_a_worker() -> None:
    """Stops a worker that is importing an unguarded script at once (it would otherwise run the script's
    work again, and wait for the index lock its caller holds); called where that work begins. It exits
    without a word (a traceback from each worker would bury the caller's error, which says what to do)."""
    if multiprocessing.current_process().name == WORKER_NAME:
        os._exit(RAN_THE_SCRIPT)


@dataclass(frozen=True)
class Failure:
    """A file whose worker crashed, exited or hung: ``reason`` says which, in words; ``hung``: killed
    for taking longer than its time limit (a longer one might see it through); ``files_doing``: the
    worker died of a decoder's native crash (`CRASH_SIGNALS`) or hung on it, where a worker that exited
    (an error of the process or of this code) or was killed from outside need not be the file's doing."""

    reason: str
    hung: bool = False
    files_doing: bool = True


CRASH_SIGNALS = ("SIGSEGV", "SIGBUS", "SIGABRT", "SIGFPE", "SIGILL")
"""What a decoder's native crash kills its process with (SIGKILL and SIGTERM come from outside: memory,
a scheduler's preemption)."""


def signal_name(number: int) -> str:
    """``SIGSEGV`` for 11: what a process's negative exit code says killed it."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def crash_reason(name: str) -> str:
    """The skip list's reason for a file whose decoder crashed with the signal of this name."""
    return f"decoder crashed: {name}"


def _serve(conn: Connection, task: Callable, stderr_path: str, memory_bytes: int | None, pool_pid: int) -> None:
    """Worker loop: say it is ready, then receive a path, send back ``(task(path), retiring)``, until the
    pipe closes, a decoder call of its own never returned (``retiring``: it exits after this answer) or
    the pool's process ``pool_pid`` ends (`end_with`: its parent is the forkserver, not the pool's
    process, and a decoder stuck in a file outlived a pool killed outright)."""
    end_with(pool_pid, "ttt-mm-pool-watch")
    # Ctrl-C reaches the whole process group: the caller stops its workers, and a worker killed by it
    # mid-file would otherwise be recorded as that file's decoder failing
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # native decoders print to fd 2: keep it in a file the parent reads when a worker dies
    fd = os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(fd, 2)
    os.close(fd)
    guard.keep_native_stderr()  # (silenced while a decoder runs, its words before an abort were lost)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crashing decoder leaves no core file behind
    if memory_bytes is not None:
        with open("/proc/self/statm") as f:
            base = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        resource.setrlimit(resource.RLIMIT_AS, (base + memory_bytes, resource.RLIM_INFINITY))
    conn.send(READY)
    while True:
        try:
            path = conn.recv()
        except EOFError:
            return
        os.ftruncate(2, 0)
        os.lseek(2, 0, os.SEEK_SET)
        result = task(path)
        retiring = bool(guard.hung_calls())  # a decoder thread still spins here: make way for a fresh worker
        conn.send((result, retiring))  # the flag tells the parent before it hands this worker another file
        if retiring:
            return


class _Worker:
    def __init__(self, context, task: Callable, memory_bytes: int | None) -> None:
        # named by this process, so that a run killed before it removed them has them swept by the next
        handle, self.stderr_path = tempfile.mkstemp(prefix=f"{STDERR_PREFIX}-{os.getpid()}-", suffix=".stderr")
        os.close(handle)
        try:
            self.conn, child = context.Pipe()
        except BaseException:
            os.unlink(self.stderr_path)
            raise
        try:
            self.process = context.Process(
                target=_serve,
                args=(child, task, self.stderr_path, memory_bytes, os.getpid()),
                daemon=True,
                name=WORKER_NAME,
            )
            self.process.start()
        except BaseException:
            self.conn.close()
            os.unlink(self.stderr_path)
            raise
        finally:
            child.close()
        self.ready = False
        self.retiring = False  # it said it exits after its answer: it takes no further file
        self.path: str | None = None
        self.deadline = 0.0

    def give(self, path: str, timeout: float) -> None:
        """Sends ``path``; its time starts now, or once the worker is ready (up to ``STARTUP_TIMEOUT``)."""
        self.path = path
        self.deadline = time.monotonic() + timeout + (0.0 if self.ready else STARTUP_TIMEOUT)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # it died: `_collect` says why
            self.conn.send(path)

    def last_message(self) -> str:
        """The last line the worker printed to stderr (e.g. a C++ ``terminate called ...``)."""
        try:
            with open(self.stderr_path, "rb") as f:  # (a decoder's warnings on a long damaged file: only the end)
                f.seek(max(0, os.fstat(f.fileno()).st_size - 4000))
                text = f.read().decode(errors="replace")
            lines = [line.strip() for line in text.splitlines() if line.strip()]
        except OSError:
            return ""
        return lines[-1][:200] if lines else ""

    def stop(self) -> None:
        self.conn.close()
        if self.process.is_alive():
            self.process.kill()
        self.process.join(STOP_WAIT_S)
        if self.process.is_alive():
            log.warning(
                "a decoder worker (pid %d) has not exited %g s after it was killed (a read stuck in the kernel: "
                "a hung network file system?); going on without it",
                self.process.pid,
                STOP_WAIT_S,
            )
            # (multiprocessing joins the children it knows of, without a timeout, as the process exits)
            getattr(multiprocessing.process, "_children", set()).discard(self.process)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.stderr_path)


STOP_WAIT_S = 10.0
"""How long a killed worker is waited for: one stuck in the kernel (a read from a hung network file
system) dies only once the read returns, and waiting for it would hang the run the timeout was for."""


class IsolatedPool:
    """``task(path)`` for many paths, each in a worker process; crashes and hangs become `Failure`s.

    Args:
        task: a module-level function (it is pickled by reference) returning something picklable.
        jobs: worker processes.
        timeout: seconds ``task`` may take for one file before its worker is killed (see ``budget``).
        budget: extra seconds per byte of the file (opening demuxes all of it), so large files get longer.
        memory_gb: address space a worker may add on top of what it has after start-up (None: no limit).
    """

    def __init__(
        self,
        task: Callable[[str], object],
        jobs: int = 2,
        timeout: float = 60.0,
        budget: float = 1 / 20e6,
        memory_gb: float | None = 4.0,
    ) -> None:
        if jobs < 1:
            raise ValueError(f"jobs must be >= 1; got {jobs}")
        refuse_in_a_worker()
        self.task, self.jobs, self.timeout, self.budget = task, jobs, timeout, budget
        self.memory_bytes = None if memory_gb is None else int(memory_gb * 2**30)
        remove_left_by_gone(STDERR_PREFIX)
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload(PRELOAD)
        start_forkserver()

    def deadline(self, path: str) -> float:
        """Seconds allowed for one file."""
        try:
            size = os.path.getsize(path)
        except OSError:
            size = 0
        return self.timeout + size * self.budget

    def map(self, paths: Iterable[str]) -> Iterator[tuple[str, object]]:
        """``(path, task(path) or Failure)`` for every path, in completion order."""
        todo = list(paths)[::-1]
        workers: list[_Worker] = []
        try:
            while todo or workers:
                for worker in [w for w in workers if w.path is None and (w.retiring or not w.process.is_alive())]:
                    workers.remove(worker)  # it exits after answering (it had left a decoder thread running)
                    worker.stop()
                while todo and len(workers) < self.jobs:
                    workers.append(_Worker(self.context, self.task, self.memory_bytes))
                for worker in workers:
                    if worker.path is None and todo:
                        path = todo.pop()
                        worker.give(path, self.deadline(path))
                busy = [w for w in workers if w.path is not None]
                if not busy:
                    break
                ready = wait(
                    [w.conn for w in busy] + [w.process.sentinel for w in busy],
                    timeout=max(0.0, min(w.deadline for w in busy) - time.monotonic()),
                )
                for worker in busy:
                    result = self._collect(worker, ready)
                    if result is None:
                        continue
                    yield worker.path, result
                    worker.path = None
                    if isinstance(result, Failure):
                        workers.remove(worker)
                        worker.stop()
                if not todo:
                    for worker in [w for w in workers if w.path is None]:
                        workers.remove(worker)
                        worker.stop()
        finally:
            for worker in workers:
                worker.stop()

    def _collect(self, worker: _Worker, ready: list) -> object | None:
        """The worker's answer, a `Failure` if it died or ran out of time, or None while it works.
        Raises `WorkerStartError` if it died or stalled before it was ready."""
        if worker.conn in ready:
            try:
                answer = worker.conn.recv()
            except (EOFError, ConnectionResetError):
                pass  # it died while answering: see below
            else:
                if answer != READY:
                    result, worker.retiring = answer
                    return result
                worker.ready = True
                worker.deadline = time.monotonic() + self.deadline(worker.path)
                return None
        elif worker.process.sentinel not in ready:
            if time.monotonic() < worker.deadline:
                return None
            if not worker.ready:
                raise WorkerStartError(
                    f"a decoder worker did not start in {STARTUP_TIMEOUT:.0f} s; {_why_workers_fail()}"
                )
            limit = self.deadline(worker.path)
            log.warning("%s: no answer from its decoder in %.0f s; the worker was killed", worker.path, limit)
            return Failure(f"decoder hung: no answer in {limit:.0f} s", hung=True)
        worker.process.join(5.0)
        code = worker.process.exitcode
        if not worker.ready and code == RAN_THE_SCRIPT:
            raise WorkerStartError(f"a decoder worker ran the script that started it; {UNGUARDED_SCRIPT}")
        if not worker.ready:
            raise WorkerStartError(f"a decoder worker exited (status {code}) before it started; {_why_workers_fail()}")
        message = worker.last_message()
        how = signal_name(-code) if code is not None and code < 0 else None
        reason = crash_reason(how) if how else f"decoder exited with status {code}"
        return Failure(reason + (f" ({message})" if message else ""), files_doing=how in CRASH_SIGNALS)
