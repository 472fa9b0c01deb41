"""One session's writes, stored in the order the upstream sent them, retried until stored.

The upstream has no replay: an event we fail to store is gone. So the relay never lets a
database outage cost one. The session's reader keeps reading the upstream and appends each
write here; a writer task stores them one at a time, in order, retrying with backoff while
the database is unreachable (a PostgreSQL restart, a locked SQLite). The queue is bounded
(MAX_PENDING): when it is full the reader waits, which stops it reading until the database
takes writes again. Other sessions have queues of their own and go on.

A write the database refuses for what it is (not for being unreachable) is retried twice,
then replaced by an anomaly event saying what could not be stored, and the queue goes on.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from django.db import InterfaceError, OperationalError

from sessions_monitor import telemetry

logger = logging.getLogger(__name__)

MAX_PENDING = 10_000
RETRY_DELAYS = (0.1, 0.25, 0.5, 1.0, 2.0)
REFUSED_ATTEMPTS = 3
# Unreachable database (connection refused or reset, server restarting, SQLite locked).
TRANSIENT = (OperationalError, InterfaceError, ConnectionError, TimeoutError)


@dataclass(frozen=True, slots=True)
class Write:
    """`run()` stores something; `describe` says what, for the anomaly if it never can be."""

    run: Callable[[], Awaitable[Any]]
    describe: str
    on_refused: Callable[[BaseException], Awaitable[Any]] | None = None


class OrderedWrites:
    def __init__(self, session_id: str, *, max_pending: int = MAX_PENDING) -> None:
        self.session_id = session_id
        self.max_pending = max_pending
        self._pending: deque[Write] = deque()
        self._space = asyncio.Event()
        self._space.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self.failing = False

    def __len__(self) -> int:
        return len(self._pending)

    async def put(self, write: Write) -> None:
        """Queue a write (waits while MAX_PENDING are queued)."""
        while len(self._pending) >= self.max_pending:
            self._space.clear()
            await self._space.wait()
        self._pending.append(write)
        self._idle.clear()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name=f"writes:{self.session_id}")

    async def drained(self) -> None:
        """Until everything queued so far is stored (or given up with an anomaly)."""
        await self._idle.wait()

    def cancel(self) -> int:
        """Stop writing; returns how many writes are lost (shutdown past its deadline)."""
        lost = len(self._pending)
        if self._task is not None:
            self._task.cancel()
        self._pending.clear()
        self._idle.set()
        return lost

    async def _drain(self) -> None:
        while self._pending:
            write = self._pending[0]
            await self._store(write)
            self._pending.popleft()
            self._space.set()
        self._idle.set()

    async def _store(self, write: Write) -> None:
        attempt = refused = 0
        while True:
            try:
                # Shielded: cancelling the drain (shutdown) must not cut a write in half.
                await asyncio.shield(asyncio.ensure_future(write.run()))
            except asyncio.CancelledError:
                raise
            except TRANSIENT as exc:
                self._note_failing(write, exc)
                delay = RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)]
                attempt += 1
                telemetry.db_write_retries.inc()
                await asyncio.sleep(delay)
                continue
            except Exception as exc:
                refused += 1
                if refused < REFUSED_ATTEMPTS:
                    telemetry.db_write_retries.inc()
                    await asyncio.sleep(RETRY_DELAYS[0])
                    continue
                await self._refused(write, exc)
                return
            if self.failing:
                logger.info("relay: %s: the database takes writes again", self.session_id)
                self.failing = False
            return

    def _note_failing(self, write: Write, exc: BaseException) -> None:
        if not self.failing:
            logger.warning(
                "relay: %s: cannot store %s (%s); keeping it and retrying",
                self.session_id,
                write.describe,
                type(exc).__name__,
            )
        self.failing = True

    async def _refused(self, write: Write, exc: BaseException) -> None:
        telemetry.events_dropped.labels(type(exc).__name__).inc()
        logger.error(
            "relay: %s: the database refused %s (%s); noting it as an anomaly",
            self.session_id,
            write.describe,
            type(exc).__name__,
        )
        if write.on_refused is None:
            return
        try:
            await write.on_refused(exc)
        except Exception:
            logger.exception("relay: %s: could not even note the refused write", self.session_id)
