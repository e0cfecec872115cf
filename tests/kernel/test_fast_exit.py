"""`python -m harness` ends with os._exit once its work is done (harness/fast_exit.py): the exit status,
the streams, logging and exit handlers are kept; module teardown is skipped unless a non-daemon thread
still runs."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROGRAM = """
import atexit, logging, sys, threading, time
from pathlib import Path
from harness.fast_exit import run_then_exit

OUT = Path(sys.argv[1])


class Teardown:  # its finaliser runs when the interpreter tears modules down
    def __del__(self):
        OUT.joinpath("teardown").write_text("ran")


KEPT = Teardown()


def command():
    logging.basicConfig(filename=OUT / "log.txt", level=logging.INFO)
    logging.info("logged line")
    atexit.register(lambda: OUT.joinpath("atexit").write_text("ran"))
    sys.stdout.write("no newline at the end")
{body}

run_then_exit(command)
"""


def run(tmp_path: Path, body: str) -> subprocess.CompletedProcess:
    """Runs the program as a user's shell would: stdout buffered (a pipe), so that unflushed output is lost."""
    without_unbuffered = {key: value for key, value in os.environ.items() if key != "PYTHONUNBUFFERED"}
    program = tmp_path / "program.py"
    program.write_text(PROGRAM.format(body=textwrap.indent(textwrap.dedent(body), "    ")))
    return subprocess.run(
        [sys.executable, str(program), str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**without_unbuffered, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )


def test_a_finished_command_skips_teardown_but_keeps_output_logs_and_exit_handlers(tmp_path):
    done = run(tmp_path, "pass")
    assert done.returncode == 0
    assert done.stdout == "no newline at the end"
    assert (tmp_path / "log.txt").read_text() == "INFO:root:logged line\n"
    assert (tmp_path / "atexit").read_text() == "ran"
    assert not (tmp_path / "teardown").exists()


def test_the_exit_status_is_the_one_sys_exit_gives(tmp_path):
    assert run(tmp_path, "sys.exit(3)").returncode == 3
    assert run(tmp_path, "sys.exit(None)").returncode == 0
    message = run(tmp_path, "sys.exit('error: bad input')")
    assert (message.returncode, message.stderr) == (1, "error: bad input\n")
    assert not (tmp_path / "teardown").exists()


def test_a_live_non_daemon_thread_is_joined_the_normal_way(tmp_path):
    done = run(
        tmp_path,
        """
        def late():
            time.sleep(0.5)
            OUT.joinpath("thread").write_text("finished")
        threading.Thread(target=late).start()
        threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
        sys.exit(4)
    """,
    )
    assert done.returncode == 4
    assert (tmp_path / "thread").read_text() == "finished"
    assert (tmp_path / "teardown").read_text() == "ran"
    assert done.stdout == "no newline at the end"


def test_a_daemon_thread_does_not_hold_the_process(tmp_path):
    done = run(tmp_path, "threading.Thread(target=time.sleep, args=(60,), daemon=True).start()")
    assert done.returncode == 0 and not (tmp_path / "teardown").exists()


def test_an_uncaught_exception_prints_its_traceback_and_fails(tmp_path):
    done = run(tmp_path, "raise ValueError('broken')")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == "ValueError: broken"
    assert (tmp_path / "atexit").read_text() == "ran"
