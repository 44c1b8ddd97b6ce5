"""Logging for rule scripts: everything (logging, warnings, stdout, stderr) into the rule's log file,
and a watchdog that stops the script when the workflow that started it is gone.

Snakemake interrupted by a signal sent to its own process alone (``kill -INT``, a scheduler, a closed
ssh session) may exit without signalling its running jobs: a training job then ran on for 86 s and
wrote its output. Every rule script runs under :func:`rule_logging`, which watches the nearest
ancestor process running Snakemake and sends the script SIGTERM once it is gone: outputs are written
atomically, so none is left looking complete, and Lightning stops at the end of its batch (its
checkpoints stay for the resume).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

WATCH_INTERVAL_S = 1.0


def _stat(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name (``[1]`` is the parent pid, ``[19]`` the start time)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def workflow_ancestor(max_depth: int = 8) -> tuple[int, str] | None:
    """``(pid, start time)`` of the nearest ancestor whose command line runs Snakemake, or ``None``
    (a script run by hand, a test, a system without ``/proc``)."""
    pid = os.getppid()
    for _ in range(max_depth):
        if pid <= 1:
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        stat = _stat(pid)
        if stat is None:
            return None
        if b"snakemake" in cmdline:
            return pid, stat[19]
        pid = int(stat[1])
    return None


def stop_when_gone(ancestor: tuple[int, str], log: logging.Logger, interval_s: float = WATCH_INTERVAL_S) -> threading.Thread:
    """A daemon thread that sends this process SIGTERM once ``ancestor`` has exited (its pid gone, or
    reused by a process with another start time)."""
    pid, started = ancestor

    def watch() -> None:
        while True:
            time.sleep(interval_s)
            stat = _stat(pid)
            if stat is None or stat[19] != started or stat[0] == "Z":
                log.error("the workflow process %d is gone: stopping this job (SIGTERM), no output is written", pid)
                os.kill(os.getpid(), signal.SIGTERM)
                return

    thread = threading.Thread(target=watch, name="nudgeml-workflow-watchdog", daemon=True)
    thread.start()
    return thread


@contextlib.contextmanager
def rule_logging(path: str | os.PathLike[str], level: int = logging.INFO) -> Iterator[logging.Logger]:
    """Send all output of the block to ``path``; an exception is logged with its traceback, then re-raised."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", buffering=1) as fh, contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
        handler = logging.StreamHandler(fh)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(level)
        logging.captureWarnings(True)
        warnings.simplefilter("default")
        # jcm logs every resume() at INFO; keep the log readable
        logging.getLogger("jcm").setLevel(logging.WARNING)
        logging.getLogger("jax").setLevel(logging.WARNING)
        log = logging.getLogger("nudgeml")
        ancestor = workflow_ancestor()
        if ancestor is not None:
            stop_when_gone(ancestor, log)
        try:
            yield log
        except BaseException:
            log.exception("rule failed")
            raise
        finally:
            root.removeHandler(handler)
            logging.captureWarnings(False)
