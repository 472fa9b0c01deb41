"""The relay's database writes, on Django's one sync thread, keeping their connection.

`database_sync_to_async` closes connections older than CONN_MAX_AGE around every call; with
the default of 0 (what Django asks for under ASGI) that is a new connection per call:
measured 5x slower writes in bench/relay.py. `in_db_thread(fn)` runs `fn` on the thread
`sync_to_async(thread_sensitive=True)` uses outside a request (one per process) and leaves the
connection open. A connection that broke meanwhile (a database restart) is dropped and the call
retried once, unless it broke inside a transaction: then the error goes to the caller, whose
transaction was rolled back.

Only for a few long-lived tasks (the relay's, one per followed session). Django's connections
are context-local (asgiref `Local`), and `sync_to_async` runs each call in its caller's context:
every calling task gets a connection of its own. For the relay that is one connection per
session it follows; used by every stream, page or widget that connects it kept thousands open
(SQLite then blocked new connections on its locks: a reconnect storm of 1,000 pages never
finished). Those go through `database_sync_to_async`, which closes its connection each time.
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
