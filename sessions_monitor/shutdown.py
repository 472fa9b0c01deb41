"""A last-resort bound on shutdown: a process told to stop exits within SHUTDOWN_SECONDS.

Every stop step has its own timeout (the relay's writes and leases, the hub's groups), so
this should never fire; it is there because a library blocked on a dead Redis or
PostgreSQL must not keep a process alive that its supervisor is waiting to restart.
"""

from __future__ import annotations

import logging
import os
import threading

logger = logging.getLogger(__name__)

SHUTDOWN_SECONDS = 15.0


def arm_exit_watchdog(seconds: float = SHUTDOWN_SECONDS) -> threading.Timer:
    def force_exit() -> None:
        logger.error("shutdown took longer than %.0f s; exiting now", seconds)
        logging.shutdown()
        os._exit(1)

    timer = threading.Timer(seconds, force_exit)
    timer.daemon = True
    timer.start()
    return timer
