"""The CLI's log handler writes to the stderr of the moment (notebooks and tests swap it)."""

from __future__ import annotations

import contextlib
import io
import logging

from medseg.cli import _configure_logging


def test_log_records_follow_the_current_stderr() -> None:
    _configure_logging(verbose=0, quiet=False)
    first, second = io.StringIO(), io.StringIO()
    log = logging.getLogger("medseg.test")
    with contextlib.redirect_stderr(first):
        log.warning("to the first")
    first.close()  # a handler holding on to it would now raise "I/O operation on closed file"
    with contextlib.redirect_stderr(second):
        log.warning("to the second")
        log.debug("below the level")  # default level: INFO
    assert second.getvalue() == "WARNING medseg.test: to the second\n"
