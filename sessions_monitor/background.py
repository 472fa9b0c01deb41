"""Long-running pieces that `serve` starts inside daphne's event loop.

Each one has `async start()` and `async stop()`; `stop()` must finish in-flight writes and
return within a few seconds.
"""

from __future__ import annotations

from typing import Protocol


class BackgroundService(Protocol):
    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...
