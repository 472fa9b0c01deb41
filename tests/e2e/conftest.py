"""Fixtures of the browser tests: the dashboard (`dash`) and a fresh browser context."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sessions_monitor.simulator.control import SimulatorControl
from tests.e2e.dash import Dash, dash_env, prepare_database, serve
from tests.support import free_port


@pytest.fixture(scope="module")
def dash() -> Iterator[Dash]:
    """`serve` with the embedded simulator (control API on) and its own SQLite file."""
    with tempfile.TemporaryDirectory(prefix="meetingdash-e2e-") as tmp:
        db_path = Path(tmp) / "db.sqlite3"
        env = dash_env(db_path)
        prepare_database(env)
        port = free_port()
        with serve(env, port) as process:
            control = SimulatorControl(process.base_url + "/_simulator")
            try:
                yield Dash(process.base_url, db_path, control, process)
            finally:
                control.close()


@pytest.fixture
def context(chromium: Any) -> Iterator[Any]:
    context = chromium.new_context(viewport={"width": 1280, "height": 860})
    context.set_default_timeout(15_000)
    yield context
    context.close()
