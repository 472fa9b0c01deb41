"""The session list's filter bar in a real Chromium against a real `serve` and its simulator:
filters narrow the list and the URL, the live list keeps honouring them, the sort reorders,
and the CSV link downloads exactly the filtered sessions."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import sqlite3
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from playwright.async_api import BrowserContext, Page

from tests.e2e.dash import Dash, log_in, new_session
from tests.support import eventually

pytestmark = pytest.mark.browser


def stored_status(dash: Dash, session_id: str) -> str:
    with contextlib.closing(sqlite3.connect(dash.db_path, timeout=10)) as db:
        row = db.execute(
            "SELECT status FROM sessions_monitor_meetingsession WHERE session_id = ?",
            (session_id,),
        ).fetchone()
    return str(row[0]) if row else ""


def started_in_an_earlier_second(dash: Dash, session_id: str) -> bool:
    """The upstream's `created_at` (our `started_at`) has whole seconds: a session created in
    the same second would tie with this one in a sort by start or duration."""
    with contextlib.closing(sqlite3.connect(dash.db_path, timeout=10)) as db:
        row = db.execute(
            "SELECT started_at FROM sessions_monitor_meetingsession WHERE session_id = ?",
            (session_id,),
        ).fetchone()
    if not row or not row[0]:
        return False
    started = datetime.fromisoformat(str(row[0])).replace(tzinfo=UTC)
    return datetime.now(UTC) - started >= timedelta(seconds=1)


async def active_session(dash: Dash, page: Page, **fields: str) -> str:
    """A manual simulator session, watched, then in the meeting (stored as such)."""
    assert dash.control is not None
    session_id = await new_session(dash, page, **fields)
    dash.control.emit(session_id, status="active")
    await eventually(
        lambda: stored_status(dash, session_id) == "active", 10, f"{session_id} to be active"
    )
    return session_id


async def row_ids(page: Page) -> list[str]:
    ids: list[str] = await page.eval_on_selector_all(
        "#session-rows .session-row", "rows => rows.map(row => row.id.slice('session-'.length))"
    )
    return ids


async def _rows_are(page: Page, expected: list[str]) -> bool:
    return await row_ids(page) == expected


async def test_filter_live_updates_sort_and_csv_of_the_filtered_sessions(
    dash: Dash, context: BrowserContext
) -> None:
    assert dash.control is not None
    page = await context.new_page()
    await log_in(page, dash.base_url)
    bot = f"Filter bot {uuid.uuid4().hex[:6]}"
    zoom_active = await active_session(dash, page, bot_name=bot, platform="zoom")
    teams_active = await active_session(dash, page, bot_name=bot, platform="teams")
    # The sort by duration below must not meet a tie.
    await eventually(lambda: started_in_an_earlier_second(dash, zoom_active), 10, "a new second")
    zoom_waiting = await new_session(dash, page, bot_name=bot, platform="zoom")

    await page.goto(f"{dash.base_url}/?filter=all")
    await page.locator('#browser-link[data-state="live"]').wait_for()
    await page.evaluate("window.__notReloaded = true")
    await page.fill("#list-tools input[name=bot]", bot)
    await page.select_option("#list-tools select[name=platform]", "zoom")
    await page.select_option("#list-tools select[name=status]", "active")
    await page.click("#list-tools button:text('Apply')")
    summary = page.locator("#list-summary")
    await summary.filter(has_text=f"All · In meeting · zoom · {bot}").wait_for()
    await page.wait_for_url("**/?*status=active*")
    assert "platform=zoom" in page.url and "bot=Filter+bot" in page.url
    await eventually(lambda: _rows_are(page, [zoom_active]), 10, "only the matching session")
    assert await page.evaluate("window.__notReloaded") is True  # swapped, not reloaded

    # Live: a session that does not match (teams) is stored as active first; then one that
    # matches. The second appearing proves the first was decided on, and left out.
    late_teams = await active_session(dash, page, bot_name=bot, platform="teams")
    late_zoom = await new_session(dash, page, bot_name=bot, platform="zoom")
    dash.control.emit(late_zoom, status="active")
    await page.locator(f"#session-{late_zoom}").wait_for()
    shown = await row_ids(page)
    assert shown == [late_zoom, zoom_active]  # newest started first
    for left_out in (teams_active, zoom_waiting, late_teams):
        assert left_out not in shown

    # One that stops matching leaves (and the socket keeps the filters after it).
    dash.control.emit(late_zoom, status="completed")
    await page.locator(f"#session-{late_zoom}").wait_for(state="detached")

    dash.control.emit(zoom_waiting, status="active")
    await page.locator(f"#session-{zoom_waiting}").wait_for()
    assert await row_ids(page) == [zoom_waiting, zoom_active]

    # Sort by duration, longest first: the oldest of two running sessions leads.
    await page.select_option("#list-tools select[name=sort]", "-duration")
    await page.click("#list-tools button:text('Apply')")
    await page.locator(".list-order", has_text="Longest first").wait_for()
    assert "sort=-duration" in page.url
    await eventually(lambda: _rows_are(page, [zoom_active, zoom_waiting]), 10, "the new order")

    # The CSV link carries the filter: exactly these sessions, in this order.
    link = page.locator("a.csv-link")
    href = await link.get_attribute("href") or ""
    assert "platform=zoom" in href and "status=active" in href and "sort=-duration" in href
    async with page.expect_download() as download_info:
        await link.click()
    download = await download_info.value
    path = await download.path()
    body = await asyncio.to_thread(path.read_text, encoding="utf-8")
    rows = list(csv.DictReader(io.StringIO(body)))
    assert [row["session_id"] for row in rows] == [zoom_active, zoom_waiting]
    assert {row["platform"] for row in rows} == {"zoom"}
    assert {row["status"] for row in rows} == {"active"}
    assert {row["bot_name"] for row in rows} == {bot}
    assert download.suggested_filename.startswith("sessions-")

    # Without JavaScript's help too: reloading the pushed URL renders the same filtered page.
    await page.reload()
    await summary.filter(has_text="sorted: longest first").wait_for()
    assert await row_ids(page) == [zoom_active, zoom_waiting]
    assert await page.locator("#list-tools select[name=platform]").input_value() == "zoom"
