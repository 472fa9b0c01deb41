"""Database calls from async code, on Django's one sync thread, keeping its connection.

`database_sync_to_async` closes connections older than CONN_MAX_AGE around every call; with
the default of 0 (what Django asks for under ASGI) that is a new connection per call. On the
hot paths (the relay's writes, and what every stream, page socket and widget reads when it
connects) that was the largest single cost: measured 5x slower writes in bench/relay.py, and
a third of a stream's connect in a py-spy profile of a 1,000-client reconnect (docs/benchmarks.md).

`in_db_thread(fn)` runs `fn` on the thread `sync_to_async(thread_sensitive=True)` uses outside
a request (one per process), where the connection then stays open between calls. A connection
that broke meanwhile (a database restart) is dropped and the call retried once, unless it
broke inside a transaction: then the error goes to the caller, whose transaction was rolled
back. Inside a request the call runs on that request's thread, whose connection Django closes
when the request ends.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.db import InterfaceError, OperationalError, connection

P = ParamSpec("P")
T = TypeVar("T")


def in_db_thread(fn: Callable[P, T]) -> Callable[P, Awaitable[T]]:
    def run(*args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except (InterfaceError, OperationalError):
            if connection.in_atomic_block:
                raise
            connection.close()
            return fn(*args, **kwargs)

    return sync_to_async(run, thread_sensitive=True)
