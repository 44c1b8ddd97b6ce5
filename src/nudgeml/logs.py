"""Logging for rule scripts: everything (logging, warnings, stdout, stderr) into the rule's log file."""

from __future__ import annotations

import contextlib
import logging
import os

import warnings
from collections.abc import Iterator
from pathlib import Path


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
        try:
            yield log
        except BaseException:
            log.exception("rule failed")
            raise
        finally:
            root.removeHandler(handler)
            logging.captureWarnings(False)
