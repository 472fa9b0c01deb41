"""Stopping bots from the admin, and the audit trail there and in the CSV export.

Clicks through the admin as a user would: every request is built from the forms of the page
before it (the changelist's action form, then the confirmation page's form), through the
application as `serve` builds it, against the real simulator over a real socket."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from html import unescape
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from channels.db import database_sync_to_async
from django.contrib.auth.models import Permission, User

from meetingdash.asgi import build_application
from sessions_monitor.admin import admin_session_url
from sessions_monitor.models import (
    ControlAction,
    ControlKind,
    ControlOutcomeKind,
    MeetingSession,
)
from tests.simulator_helpers import new_session_id
from tests.support import login_cookie, make_session

pytestmark = pytest.mark.django_db(transaction=True)

CHANGELIST = "/admin/sessions_monitor/meetingsession/"
AUDIT_LIST = "/admin/sessions_monitor/controlaction/"


# --- reading forms off a page -------------------------------------------------------------


@dataclass
class Form:
    action: str
    fields: list[tuple[str, str]] = field(default_factory=list)
    checkboxes: list[tuple[str, str]] = field(default_factory=list)
    options: dict[str, list[str]] = field(default_factory=dict)

    def values(self, **chosen: str | list[str]) -> list[tuple[str, str]]:
        """The form as the browser would submit it: its fields, with `chosen` overriding."""
        data = [(name, value) for name, value in self.fields if name not in chosen]
        for name, value in chosen.items():
            data += [(name, item) for item in ([value] if isinstance(value, str) else value)]
        return data


class FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []
        self._select: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {key: value or "" for key, value in attrs}
        if tag == "form":
            self.forms.append(Form(attributes.get("action", "")))
        elif not self.forms:
            return
        elif tag == "input" and "name" in attributes:
            pair = (attributes["name"], attributes.get("value", ""))
            kind = attributes.get("type", "text")
            if kind == "checkbox":
                self.forms[-1].checkboxes.append(pair)
            elif kind != "submit":
                self.forms[-1].fields.append(pair)
        elif tag == "select":
            self._select = attributes.get("name", "")
            self.forms[-1].options[self._select] = []
        elif tag == "option" and self._select is not None:
            self.forms[-1].options[self._select].append(attributes.get("value", ""))

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self._select = None


def forms_of(html: str) -> list[Form]:
    parser = FormParser()
    parser.feed(html)
    return parser.forms


def messages_of(html: str) -> list[str]:
    """The texts of the admin's message list (Django escapes them: unescape to compare)."""
    items = re.findall(
        r'<li class="[a-z]+">(.*?)</li>',
        html.partition('class="messagelist"')[2].partition("</ul>")[0],
        re.S,
    )
    return [unescape(item.strip()) for item in items]


def action_form(html: str) -> Form:
    [form] = [f for f in forms_of(html) if "action" in f.options]
    return form


# --- fixtures -----------------------------------------------------------------------------


def _staff(*codenames: str) -> tuple[User, str]:
    user = User.objects.create_user(f"staff-{uuid.uuid4().hex[:6]}", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return user, login_cookie(user).decode()


VIEW_PERMISSIONS = ("view_meetingsession", "view_controlaction")


@dataclass
class Browser:
    """One logged-in admin user's cookie jar over our ASGI app."""

    client: httpx.AsyncClient
    user: User

    async def get(self, path: str) -> httpx.Response:
        response = await self.client.get(path)
        assert response.status_code == 200, (path, response.status_code)
        return response

    async def submit(self, path: str, data: list[tuple[str, str]]) -> httpx.Response:
        return await self.client.post(
            path,
            content=urlencode(data).encode(),
            headers={"content-type": "application/x-www-form-urlencoded", "referer": path},
        )


async def browser_for(*codenames: str) -> Any:
    user, cookie = await database_sync_to_async(_staff)(*codenames)
    name, _, value = cookie.partition("=")
    transport = httpx.ASGITransport(app=build_application())
    client = httpx.AsyncClient(
        transport=transport, base_url="http://127.0.0.1", cookies={name: value}
    )
    # The admin login page sets the CSRF cookie the forms' tokens are checked against.
    await client.get("/admin/login/")
    return Browser(client, user)


@pytest.fixture
async def operator() -> Any:
    browser = await browser_for(*VIEW_PERMISSIONS, "control_session")
    yield browser
    await browser.client.aclose()


@pytest.fixture
async def viewer() -> Any:
    browser = await browser_for(*VIEW_PERMISSIONS)
    yield browser
    await browser.client.aclose()


def live_sessions(upstream: Any, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        session_id = new_session_id()
        upstream.control.create_session(session_id=session_id, manual=True)
        upstream.control.emit(session_id, status="active")
        make_session(session_id, bot_name=f"Bot {session_id[-4:]}")
        ids.append(session_id)
    return ids


def upstream_status(upstream: Any, session_id: str) -> str:
    answer = httpx.get(
        upstream.url(f"/v1/meeting-buddy/sessions/{session_id}"), headers=upstream.headers
    )
    return str(answer.json()["status"])


# --- the bulk stop ------------------------------------------------------------------------


async def test_stop_the_selected_bots_through_the_confirmation_page(
    upstream: Any, operator: Browser
) -> None:
    first, second, untouched = await database_sync_to_async(live_sessions)(upstream, 3)

    changelist = await operator.get(CHANGELIST)
    form = action_form(changelist.text)
    assert "stop_bots" in form.options["action"]
    listed = {value for name, value in form.checkboxes if name == "_selected_action"}
    assert {first, second, untouched} <= listed

    confirm = await operator.submit(
        CHANGELIST, form.values(action="stop_bots", _selected_action=[first, second])
    )
    assert confirm.status_code == 200
    assert "Stop these bots?" in confirm.text and first in confirm.text and second in confirm.text
    assert untouched not in confirm.text
    assert not await ControlAction.objects.aexists()  # nothing happens before confirming
    assert await database_sync_to_async(upstream_status)(upstream, first) == "active"

    [confirmation] = [f for f in forms_of(confirm.text) if ("post", "yes") in f.fields]
    done = await operator.submit(CHANGELIST, confirmation.values())
    assert done.status_code == 302 and done.headers["location"].endswith(CHANGELIST)
    after = await operator.get(CHANGELIST)
    assert messages_of(after.text) == ["Stop requested for 2 bot(s)."]

    for session_id in (first, second):
        assert await database_sync_to_async(upstream_status)(upstream, session_id) == "completed"
    assert await database_sync_to_async(upstream_status)(upstream, untouched) == "active"
    rows = [row async for row in ControlAction.objects.order_by("session_ref")]
    assert sorted(row.session_ref for row in rows) == sorted([first, second])
    assert all(
        row.action == ControlKind.STOP
        and row.outcome == ControlOutcomeKind.DONE
        and row.via == "admin"
        and row.actor_id == operator.user.pk
        for row in rows
    )

    page = await operator.get(admin_session_url(first))
    assert "Control actions (audit trail)" in page.text
    assert "Stop requested; the bot is leaving." in page.text
    assert operator.user.username in page.text
    other = await operator.get(admin_session_url(untouched))
    assert "Stop requested; the bot is leaving." not in other.text


async def test_stopping_again_reports_the_no_op_and_failures(
    upstream: Any, operator: Browser
) -> None:
    stopped, busy = await database_sync_to_async(live_sessions)(upstream, 2)
    await database_sync_to_async(upstream.control.emit)(stopped, status="completed")
    await MeetingSession.objects.filter(pk=stopped).aupdate(status="completed")
    await database_sync_to_async(upstream.control.set_faults)(
        busy, control_fail_next={"count": 1, "status": 429, "retry_after": 5}
    )
    form = action_form((await operator.get(CHANGELIST)).text)
    confirm = await operator.submit(
        CHANGELIST, form.values(action="stop_bots", _selected_action=[stopped, busy])
    )
    assert "already stopped" in confirm.text
    [confirmation] = [f for f in forms_of(confirm.text) if ("post", "yes") in f.fields]
    await operator.submit(CHANGELIST, confirmation.values())
    after = messages_of((await operator.get(CHANGELIST)).text)
    assert after == [
        "Stop requested for 0 bot(s). 1 had already stopped.",
        f"Not stopped: {busy}. Meeting Buddy is busy: try again in 5 s.",
    ]
    outcomes = {row.session_ref: row.outcome async for row in ControlAction.objects.all()}
    assert outcomes == {stopped: ControlOutcomeKind.NO_OP, busy: ControlOutcomeKind.REFUSED}


async def test_a_staff_user_without_the_permission_does_not_get_the_action(
    upstream: Any, viewer: Browser
) -> None:
    [session_id] = await database_sync_to_async(live_sessions)(upstream, 1)
    changelist = await viewer.get(CHANGELIST)
    form = action_form(changelist.text)
    assert "stop_bots" not in form.options["action"]
    assert "export_control_actions_csv" in form.options["action"]
    # Posting the action by hand does not run it either.
    forged = await viewer.submit(
        CHANGELIST, form.values(action="stop_bots", _selected_action=session_id)
    )
    assert forged.status_code in (200, 302)
    assert "Stop these bots?" not in forged.text
    confirmed = await viewer.submit(
        CHANGELIST,
        form.values(action="stop_bots", _selected_action=session_id, post="yes"),
    )
    assert "Stop these bots?" not in confirmed.text
    assert not await ControlAction.objects.aexists()
    assert await database_sync_to_async(upstream_status)(upstream, session_id) == "active"


# --- the audit trail's own admin and CSV --------------------------------------------------


def _audit_row(session_id: str, **fields: Any) -> ControlAction:
    values: dict[str, Any] = {
        "session_id": session_id,
        "session_ref": session_id,
        "action": ControlKind.STOP,
        "actor_name": "alice",
        "via": "api",
        "outcome": ControlOutcomeKind.REFUSED,
        "upstream_status": 429,
        "upstream_code": "RATE_LIMITED",
        "message": "=HYPERLINK(1) Meeting Buddy is busy",
        "request": {"session_id": session_id},
    }
    return ControlAction.objects.create(**{**values, **fields})


async def test_the_control_action_admin_is_read_only_and_filters(viewer: Browser) -> None:
    session_id = new_session_id()
    await database_sync_to_async(make_session)(session_id)
    row = await database_sync_to_async(_audit_row)(session_id)
    await database_sync_to_async(_audit_row)(
        session_id, via="page", outcome="done", message="Stop requested."
    )

    listing = await viewer.get(AUDIT_LIST)
    assert "=HYPERLINK(1) Meeting Buddy is busy" in listing.text
    assert admin_session_url(session_id) in listing.text
    assert "addlink" not in listing.text and f"{AUDIT_LIST}add/" not in listing.text
    filtered = await viewer.get(f"{AUDIT_LIST}?via__exact=page")
    assert "=HYPERLINK(1)" not in filtered.text and "Stop requested." in filtered.text
    for query in ("outcome__exact=refused", "action__exact=stop"):
        assert "=HYPERLINK(1)" in (await viewer.get(f"{AUDIT_LIST}?{query}")).text

    detail = await viewer.get(f"{AUDIT_LIST}{row.pk}/change/")
    assert 'name="_save"' not in detail.text and "RATE_LIMITED" in detail.text
    assert (await viewer.client.get(f"{AUDIT_LIST}{row.pk}/delete/")).status_code == 403
    assert (await viewer.client.get(f"{AUDIT_LIST}add/")).status_code == 403


async def test_the_control_actions_csv_export(viewer: Browser) -> None:
    chosen, other = new_session_id(), new_session_id()
    for session_id in (chosen, other):
        await database_sync_to_async(make_session)(session_id)
        await database_sync_to_async(_audit_row)(session_id)
    form = action_form((await viewer.get(CHANGELIST)).text)
    response = await viewer.submit(
        CHANGELIST, form.values(action="export_control_actions_csv", _selected_action=chosen)
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert "session-control-actions-" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [row["session_id"] for row in rows] == [chosen]
    assert rows[0]["message"] == "'=HYPERLINK(1) Meeting Buddy is busy"  # no formula
    assert rows[0]["upstream_status"] == "429" and rows[0]["via"] == "api"
    assert json.loads(rows[0]["request"]) == {"session_id": chosen}


# --- the same click-through in a real browser ---------------------------------------------


@pytest.fixture(scope="module")
def browser_dash() -> Iterator[Any]:
    """`serve` with the embedded simulator and relay, its own SQLite file, the demo superuser."""
    from tests.e2e.dash import running_dash

    with running_dash("meetingdash-admin-control-") as dash:
        yield dash


@pytest.mark.browser
async def test_an_admin_stops_a_bot_in_the_browser(chromium: Any, browser_dash: Any) -> None:
    from tests.e2e.dash import PASSWORD, new_context, new_session

    context = await new_context(chromium)
    page = await context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    try:
        await page.goto(f"{browser_dash.base_url}/admin/login/?next=/admin/")
        await page.fill("#id_username", "demo")
        await page.fill("#id_password", PASSWORD)
        await page.click("input[type=submit]")
        await page.wait_for_url(f"{browser_dash.base_url}/admin/")
        session_id = await new_session(browser_dash, page)

        await page.goto(f"{browser_dash.base_url}{CHANGELIST}?q={session_id}")
        await page.check(f"input[name=_selected_action][value={session_id}]")
        await page.select_option("select[name=action]", "stop_bots")
        await page.click("button[name=index]")
        await page.wait_for_selector("#stop-selected")
        assert session_id in await page.inner_text("#stop-selected")
        await page.click("input[type=submit][value^='Yes, stop']")
        await page.wait_for_selector(".messagelist")
        assert "Stop requested for 1 bot(s)." in await page.inner_text(".messagelist")

        await page.goto(browser_dash.base_url + admin_session_url(session_id))
        audit = await page.inner_text("body")
        assert "control actions (audit trail)" in audit.lower()  # the admin's CSS capitalises
        assert "Stop requested; the bot is leaving." in audit
        status = await asyncio.to_thread(
            lambda: httpx.get(
                f"{browser_dash.base_url}/_simulator/v1/meeting-buddy/sessions/{session_id}"
            ).json()["status"]
        )
        assert status == "completed"
        assert not [p for p in problems if "Content Security Policy" in p], problems
    finally:
        await context.close()
