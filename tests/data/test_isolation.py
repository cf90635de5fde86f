"""Starting the decoder workers: a worker that cannot start is the caller's problem, said as such, never a
file's (which the index would remember as unreadable)."""

from __future__ import annotations

import ast
import contextlib
import multiprocessing
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

import ttt_mm
from ttt_mm.data.decode import isolation

ROOT = Path(__file__).resolve().parents[2]

SCRIPTS = {  # what a user's script does, directly with the pool or through the dataset index
    "pool": """
        import os
        from ttt_mm.data.decode.isolation import IsolatedPool

        def main():
            print(dict(IsolatedPool(os.path.getsize, jobs=1, timeout=30).map([__file__])))
        """,
    "index": """
        import os
        from ttt_mm.data.index import index_files

        def main():  # the caller holds the index's lock while its workers start
            records, _ = index_files([__file__], cache_dir=os.path.join(os.path.dirname(__file__), "cache"))
            print({path: record["error"] for path, record in records.items()})
        """,
}


def run_script(path, kind: str, guarded: bool) -> subprocess.CompletedProcess:
    call = 'if __name__ == "__main__":\n    main()\n' if guarded else "main()\n"
    path.write_text(textwrap.dedent(SCRIPTS[kind]) + "\n" + call)
    return subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("kind", SCRIPTS)
def test_a_guarded_script_gets_its_answers(tmp_path, kind):
    script = tmp_path / "guarded.py"
    done = run_script(script, kind, guarded=True)
    assert done.returncode == 0, done.stderr
    (path, answer), *rest = ast.literal_eval(done.stdout.strip()).items()
    assert path == str(script) and not rest
    if kind == "pool":
        assert answer == script.stat().st_size
    else:  # a Python script is no media file: the index records why
        assert answer == "not a readable media container (ffmpeg could not open it)"


@pytest.mark.slow
@pytest.mark.parametrize("kind", SCRIPTS)
def test_an_unguarded_script_is_told_to_guard_its_code_and_no_file_is_blamed(tmp_path, kind):
    """Python prepares each worker by importing the script, which would run it again inside the worker
    (and, through the index, wait for the lock its caller holds): the worker stops at once, and the
    caller gets an error that says what to do, not a decoder failure. The worker's own traceback (25
    lines, before the caller's) is gone."""
    done = run_script(tmp_path / "unguarded.py", kind, guarded=False)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ttt_mm.data.decode.isolation.WorkerStartError: a decoder worker ran the script that")
    assert 'must keep its code under `if __name__ == "__main__":`' in last
    assert "decoder hung" not in done.stderr and not done.stdout
    assert done.stderr.count("Traceback") == 1  # the caller's: the worker stops without its own


@pytest.mark.slow
def test_a_script_read_from_standard_input_is_told_to_run_as_a_file(tmp_path):
    """Guarded, it was told to guard its code: its workers failed to read "<stdin>" again."""
    source = textwrap.dedent(SCRIPTS["pool"]).replace("[__file__]", f"[{str(tmp_path)!r}]")
    source += '\nif __name__ == "__main__":\n    main()\n'
    done = subprocess.run([sys.executable, "-"], input=source, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ttt_mm.data.decode.isolation.WorkerStartError: a decoder worker exited (status 1)")
    assert last.endswith(
        "a script read from standard input (python - < script.py, or a heredoc) cannot start "
        "decoder workers: Python prepares each by reading the script that started it again, from "
        "its file; run it as a file"
    )


@pytest.mark.slow
def test_workers_import_the_ttt_mm_that_runs_not_one_in_the_working_directory(tmp_path):
    """Python before 3.12.8 started the forkserver without the caller's import path, so a checkout in
    the working directory (here one that exits when imported) was the one its workers loaded. The
    server starts beside the running ttt_mm (no PYTHONSAFEPATH: Python 3.10 has none), and its
    workers still read a path relative to the caller's working directory."""
    (tmp_path / "script").mkdir()
    (tmp_path / "elsewhere" / "ttt_mm").mkdir(parents=True)
    (tmp_path / "elsewhere" / "ttt_mm" / "__init__.py").write_text("import os\nos._exit(3)\n")
    (tmp_path / "elsewhere" / "here.txt").write_text("12345")
    script = tmp_path / "script" / "guarded.py"
    pool = SCRIPTS["pool"].replace("map([__file__])", 'map([__file__, "here.txt"])')
    script.write_text(textwrap.dedent(pool) + '\nif __name__ == "__main__":\n    main()\n')
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path / "elsewhere", env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    assert ast.literal_eval(done.stdout.strip()) == {str(script): script.stat().st_size, "here.txt": 5}


FORKED = """
import os
from ttt_mm.data.decode.isolation import IsolatedPool

def sizes():
    return dict(IsolatedPool(os.path.getsize, jobs=1, timeout=30).map([__file__]))

if __name__ == "__main__":
    print("parent", sizes(), flush=True)
    pid = os.fork()
    if pid == 0:
        try:
            print("child", sizes(), flush=True)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    print("parent again", sizes(), flush=True)
"""


@pytest.mark.slow
def test_a_process_forked_from_one_whose_workers_ran_starts_its_own(tmp_path):
    """multiprocessing's record of the forkserver is inherited by a forked process (a user's own pool of
    embedders, say), whose check on it then failed with ChildProcessError: the server is not its child."""
    script = tmp_path / "forks.py"
    script.write_text(FORKED)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "Error" not in done.stderr, done.stderr
    size = {str(script): script.stat().st_size}
    assert done.stdout.splitlines() == [f"parent {size}", f"child {size}", f"parent again {size}"], done.stderr


def test_the_working_directory_moves_only_while_this_process_first_starts_the_server(monkeypatch):
    """It is the whole process's: a pool made later (each new file that `Embedder.embed_file` indexes)
    must not move it under another thread's feet."""
    moves = []
    real = isolation.working_directory
    monkeypatch.setattr(isolation, "working_directory", lambda path: moves.append(path) or real(path))
    monkeypatch.setattr(isolation, "_forkserver_started_by", None)
    before = os.getcwd()
    for _ in range(3):
        isolation.start_forkserver()
    assert moves == [os.path.dirname(os.path.dirname(os.path.abspath(ttt_mm.__file__)))]  # (the running one's)
    assert os.getcwd() == before


def test_worker_stderr_files_are_named_by_their_process_and_a_gone_ones_are_swept(tmp_path, monkeypatch):
    """A run killed outright (SIGKILL) left its workers' stderr files in the temporary folder for good."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # (this process's temporary folder)
    gone = subprocess.Popen(["true"])
    gone.wait()
    left = tmp_path / f"{isolation.STDERR_PREFIX}-{gone.pid}-abc.stderr"
    mine = tmp_path / f"{isolation.STDERR_PREFIX}-{os.getpid()}-def.stderr"
    left.write_text("")
    mine.write_text("")
    pool = isolation.IsolatedPool(os.path.basename, jobs=1)
    assert not left.exists() and mine.exists()  # (this process runs: its own stay)
    seen = []
    real_mkstemp = tempfile.mkstemp

    def recorded(*args, **kwargs):
        handle, path = real_mkstemp(*args, **kwargs)
        seen.append(os.path.basename(path))
        return handle, path

    monkeypatch.setattr(tempfile, "mkstemp", recorded)
    assert dict(pool.map(["/a/x.wav"])) == {"/a/x.wav": "x.wav"}
    (name,) = seen
    assert name.startswith(f"{isolation.STDERR_PREFIX}-{os.getpid()}-")
    stderr_files = [p.name for p in tmp_path.iterdir() if p.name.startswith(isolation.STDERR_PREFIX)]
    assert stderr_files == [mine.name]  # the worker's own was removed when it stopped


STUCK = """
import os, sys, time
from ttt_mm.data.decode.isolation import IsolatedPool

def stuck(path):
    with open(path, "w") as f:
        f.write(str(os.getpid()))
    while True:  # (a decoder spinning in native code takes no more files from its pipe either)
        time.sleep(0.1)

if __name__ == "__main__":
    list(IsolatedPool(stuck, jobs=1, timeout=600).map([sys.argv[1]]))
"""


def _still_runs(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie that no one has reaped yet is not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads process states from /proc")
def test_a_worker_stuck_in_a_file_ends_with_a_pool_killed_outright(tmp_path):
    """The worker's parent is the forkserver, not the pool's process: one stuck in a file outlived a pool
    killed with SIGKILL (or by the out-of-memory killer) and kept a core busy for good."""
    script, said = tmp_path / "stuck.py", tmp_path / "worker.pid"
    script.write_text(STUCK)
    pool = subprocess.Popen([sys.executable, str(script), str(said)], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (said.exists() and said.read_text()) and pool.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert said.exists() and said.read_text(), pool.stderr.read() if pool.poll() is not None else "no worker"
        worker = int(said.read_text())
        assert _still_runs(worker)
        pool.kill()
        pool.wait()
        deadline = time.monotonic() + 30
        while _still_runs(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _still_runs(worker)
    finally:
        pool.kill()
        pool.wait()
        with contextlib.suppress(ProcessLookupError, ValueError, FileNotFoundError):
            os.kill(int(said.read_text()), 9)


def test_a_killed_worker_that_does_not_exit_is_left_behind_not_waited_for(tmp_path, monkeypatch, caplog):
    """A worker stuck in the kernel (a read from a hard-mounted network file system) outlives SIGKILL
    until the read returns: stopping it waited without end, so the probe timeout hung the run."""

    class Stuck:  # (a process that a kill does not end)
        pid, killed, waited = 4242, False, None

        def is_alive(self):
            return True

        def kill(self):
            self.killed = True

        def join(self, timeout=None):
            self.waited = timeout

    worker = object.__new__(isolation._Worker)
    worker.conn, worker.process = open(os.devnull), Stuck()  # noqa: SIM115 (closed by stop)
    worker.stderr_path = str(tmp_path / "worker.stderr")
    Path(worker.stderr_path).write_text("")
    monkeypatch.setattr(isolation, "STOP_WAIT_S", 0.01)
    monkeypatch.setattr(multiprocessing.process, "_children", {worker.process})  # (joined as the process exits)
    with caplog.at_level("WARNING", logger=isolation.__name__):
        worker.stop()
    assert worker.process.killed and worker.process.waited == 0.01 and not Path(worker.stderr_path).exists()
    assert worker.process not in multiprocessing.process._children
    assert "a decoder worker (pid 4242) has not exited 0.01 s after it was killed" in caplog.text
