"""Rule scripts stop when the workflow that started them is gone, and write nothing complete-looking."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

JOB = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {src!r})
    from nudgeml.atomic import atomic_path
    from nudgeml.logs import rule_logging
    with rule_logging({log!r}) as log:
        log.info("job started")
        time.sleep(60)  # a long job: would write its output after this
        with atomic_path({out!r}) as tmp:
            tmp.write_text("complete")
""")

# stands for Snakemake: its file name holds "snakemake", as Snakemake's command line does; it
# starts the job, says its pid, then dies without signalling it (kill -INT to snakemake alone)
PARENT = textwrap.dedent("""
    import subprocess, sys, time
    job = subprocess.Popen([sys.executable, {job!r}])
    print(job.pid, flush=True)
    time.sleep(3)
""")


def test_job_stops_once_the_workflow_process_is_gone(tmp_path):
    log, out = tmp_path / "job.log", tmp_path / "out.txt"
    (tmp_path / "job.py").write_text(JOB.format(src=str(SRC), log=str(log), out=str(out)))
    (tmp_path / "snakemake_stand_in.py").write_text(PARENT.format(job=str(tmp_path / "job.py")))
    parent = subprocess.Popen([sys.executable, str(tmp_path / "snakemake_stand_in.py")], stdout=subprocess.PIPE, text=True)
    job_pid = int(parent.stdout.readline())
    parent.wait(timeout=30)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and Path(f"/proc/{job_pid}").exists() and Path(f"/proc/{job_pid}/stat").read_text().split()[2] != "Z":
        time.sleep(0.2)
    try:
        alive = Path(f"/proc/{job_pid}").exists() and Path(f"/proc/{job_pid}/stat").read_text().split()[2] != "Z"
    finally:
        if Path(f"/proc/{job_pid}").exists():
            os.kill(job_pid, signal.SIGKILL)
    assert not alive, "the job outlived the workflow process by 20 s"
    assert not out.exists(), "no complete-looking output"
    text = log.read_text()
    assert "job started" in text and "the workflow process" in text and "is gone" in text

