"""IsolatedPool's start of its workers: a worker that cannot start is the caller's problem, said as such,
never a file's (which the index would remember as unreadable)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = """
import os
from ttt_mm.data.isolation import IsolatedPool

def main():
    print(dict(IsolatedPool(os.path.getsize, jobs=1, timeout=30).map([__file__])))
"""


def run_script(path, body: str) -> subprocess.CompletedProcess:
    path.write_text(textwrap.dedent(SCRIPT) + body)
    return subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=300)


def test_a_guarded_script_gets_its_answers(tmp_path):
    done = run_script(tmp_path / "guarded.py", 'if __name__ == "__main__":\n    main()\n')
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str({str(tmp_path / "guarded.py"): (tmp_path / "guarded.py").stat().st_size})


def test_an_unguarded_script_is_told_to_guard_its_code_and_no_file_is_blamed(tmp_path):
    """Python prepares each worker by importing the script, which would run it again inside the worker:
    the worker stops at once, and the caller gets an error that says what to do, not a decoder failure."""
    done = run_script(tmp_path / "unguarded.py", "main()\n")
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "ttt_mm.data.isolation.WorkerStartError: a decoder worker exited (status 1) before it started"
    )
    assert 'must keep its code under `if __name__ == "__main__":`' in last
    assert "decoder hung" not in done.stderr and "Failure" not in done.stdout
