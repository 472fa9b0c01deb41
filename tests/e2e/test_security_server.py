"""Security hardening against real `serve` processes: what is mounted, slow clients, limits
and revocation on open streams."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests

from tests.e2e.relay_stack import RelayStack, manage, relay_stack, stack_env
from tests.support import ROOT, free_port, run_server

SECRET = "e2e-" + "k" * 48


def serve_env(tmp: Path, **extra: str) -> dict[str, str]:
    env = stack_env(tmp / "db.sqlite3", "", **extra)
    env.pop("MEETINGBUDDY_API_URL")
    return env


def run_serve(env: dict[str, str], port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_serve_refuses_to_start_without_an_upstream_or_the_simulator(tmp_path: Path) -> None:
    result = run_serve(serve_env(tmp_path), free_port())
    assert result.returncode != 0
    assert "MEETINGBUDDY_API_URL" in result.stderr and "MEETINGDASH_SIMULATOR=1" in result.stderr


def test_serve_refuses_the_simulator_without_its_token_when_debug_is_off(tmp_path: Path) -> None:
    env = serve_env(tmp_path, DJANGO_DEBUG="0", DJANGO_SECRET_KEY=SECRET, MEETINGDASH_SIMULATOR="1")
    result = run_serve(env, free_port())
    assert result.returncode != 0
    assert "MEETINGDASH_SIMULATOR_TOKEN" in result.stderr


def test_make_run_refuses_without_an_upstream() -> None:
    env = {k: v for k, v in os.environ.items() if k != "MEETINGBUDDY_API_URL"}
    venv = Path(sys.executable).parent.parent
    # -o: take the installed venv as it is (never reinstall from a test).
    result = subprocess.run(
        ["make", "-s", "-o", f"{venv}/.installed-base", "run", f"VENV={venv}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "Set MEETINGBUDDY_API_URL" in result.stdout + result.stderr


@pytest.fixture(scope="module", params=["daphne", "uvicorn"])
def production_simulator(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """`serve` as production would run it (DEBUG off) with the simulator asked for, on
    each server `serve` offers."""
    tmp = tmp_path_factory.mktemp("prod-sim")
    env = serve_env(
        tmp,
        MEETINGDASH_SERVER=request.param,
        DJANGO_DEBUG="0",
        DJANGO_SECRET_KEY=SECRET,
        DJANGO_SECURE_SSL_REDIRECT="0",
        MEETINGDASH_SIMULATOR="1",
        MEETINGDASH_SIMULATOR_TOKEN="sim-secret",
        MEETINGDASH_SIMULATOR_SESSIONS="1",
        MEETINGDASH_HEADER_TIMEOUT_SECONDS="1",
    )
    manage(["migrate", "--noinput", "-v", "0"], env)
    port = free_port()
    with run_server(
        ["manage.py", "serve", "--port", str(port)], port=port, ready_path="/healthz", env=env
    ) as server:
        yield server.base_url


def test_the_mounted_simulator_answers_only_with_its_token(production_simulator: str) -> None:
    sessions = production_simulator + "/_simulator/v1/meeting-buddy/sessions"
    body = {"meeting_link": "https://zoom.us/j/123", "bot_name": "<script>x</script>"}
    anonymous_post = httpx.post(sessions, json=body, timeout=10)
    anonymous_get = httpx.get(sessions, timeout=10)
    assert (anonymous_post.status_code, anonymous_get.status_code) == (401, 401)
    control = httpx.get(production_simulator + "/_simulator/_control/stats", timeout=10)
    assert control.status_code == 404, "no control API with DEBUG off"
    authorized = httpx.get(sessions, headers={"Authorization": "Bearer sim-secret"}, timeout=10)
    assert authorized.status_code == 200
    foreign = httpx.get(sessions, headers={"Host": "evil.example"}, timeout=10)
    assert foreign.status_code == 400


def test_a_client_that_dribbles_its_headers_is_dropped(production_simulator: str) -> None:
    port = int(production_simulator.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as slow:
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        started = time.monotonic()
        closed_after = None
        for _ in range(40):  # one header byte every 0.2 s: never a complete request
            try:
                slow.sendall(b"X")
                slow.settimeout(0.2)
                if slow.recv(1) == b"":
                    closed_after = time.monotonic() - started
                    break
            except TimeoutError:
                continue
            except OSError:
                closed_after = time.monotonic() - started
                break
    assert closed_after is not None, "a slow client kept its connection for 8 s"
    assert closed_after < 4
    assert httpx.get(production_simulator + "/healthz", timeout=10).status_code == 200


# --- limits and revocation on open streams --------------------------------------------------------


@pytest.fixture(scope="module", params=["daphne", "uvicorn"])
def stack(
    request: pytest.FixtureRequest,
    simulator_server_module: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RelayStack]:
    extra = {
        "MEETINGDASH_SERVER": request.param,
        "MEETINGDASH_MAX_STREAMS_PER_TOKEN": "2",
        "MEETINGDASH_MAX_STREAMS_PER_USER": "3",
        "MEETINGDASH_LOOKUPS_PER_MINUTE": "3",
    }
    with relay_stack(simulator_server_module, tmp_path_factory.mktemp("sec"), **extra) as running:
        yield running


class OpenStream:
    """A stream read in a thread: `lines` as they come, `ended` once the server ends it."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        self.response = requests.get(url, stream=True, timeout=30, **kwargs)
        self.lines: list[str] = []
        self.ended = threading.Event()
        if self.response.status_code == 200:
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for line in self.response.iter_lines(decode_unicode=True):
                self.lines.append(line)
        except Exception:  # closed by the server, or by close() from the test
            pass
        self.ended.set()

    def close(self) -> None:
        self.response.close()


def new_token(stack: RelayStack, username: str) -> str:
    manage(
        [
            "shell",
            "-c",
            f"from django.contrib.auth.models import User; User.objects.create_user({username!r})",
        ],
        stack.env,
    )
    return manage(["create_api_token", username], stack.env).strip().split()[-1]


def test_a_token_over_its_stream_limit_gets_429_until_one_closes(stack: RelayStack) -> None:
    session_id = stack.new_session()
    token = new_token(stack, "limited")
    auth = {"Authorization": f"Bearer {token}"}
    first, second = (OpenStream(stack.stream_url(session_id), headers=auth) for _ in range(2))
    try:
        assert (first.response.status_code, second.response.status_code) == (200, 200)
        third = requests.get(stack.stream_url(session_id), headers=auth, timeout=10)
        assert third.status_code == 429
        assert int(third.headers["Retry-After"]) >= 1
        assert third.json()["error"]["code"] == "TOO_MANY_STREAMS"
        first.close()
        deadline = time.monotonic() + 10
        while True:
            retry = OpenStream(stack.stream_url(session_id), headers=auth)
            if retry.response.status_code == 200:
                retry.close()
                break
            assert time.monotonic() < deadline, "the closed stream's slot never came back"
            time.sleep(0.2)
    finally:
        second.close()


def test_revoking_a_token_ends_its_open_stream(stack: RelayStack) -> None:
    session_id = stack.new_session()
    token = new_token(stack, "revokee")
    stream = OpenStream(stack.stream_url(session_id), headers={"Authorization": f"Bearer {token}"})
    assert stream.response.status_code == 200
    assert not stream.ended.wait(1.5), "the stream must stay open while the token is valid"
    manage(
        [
            "shell",
            "-c",
            "from sessions_monitor.models import ApiToken; from sessions_monitor import tokens; "
            "[tokens.revoke(t) for t in ApiToken.objects.filter(user__username='revokee')]",
        ],
        stack.env,
    )
    revoked_at = time.monotonic()
    assert stream.ended.wait(5), "a revoked token kept streaming"
    assert time.monotonic() - revoked_at < 3  # keepalive 1 s: checked every 0.5 s
    assert any("access ended" in line for line in stream.lines)
    again = requests.get(
        stack.stream_url(session_id), headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert again.status_code == 401


def test_deactivating_a_user_ends_their_token_streams(stack: RelayStack) -> None:
    session_id = stack.new_session()
    token = new_token(stack, "leaving-user")
    stream = OpenStream(stack.stream_url(session_id), headers={"Authorization": f"Bearer {token}"})
    assert stream.response.status_code == 200
    manage(
        [
            "shell",
            "-c",
            "from django.contrib.auth.models import User; "
            "User.objects.filter(username='leaving-user').update(is_active=False)",
        ],
        stack.env,
    )
    assert stream.ended.wait(5), "a deactivated user's token kept streaming"


def test_logging_out_ends_the_cookie_authenticated_stream(stack: RelayStack) -> None:
    session_id = stack.new_session()
    browser = requests.Session()
    login = browser.get(stack.base_url + "/accounts/login/", timeout=10)
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login.text)
    assert csrf is not None
    logged_in = browser.post(
        stack.base_url + "/accounts/login/",
        data={
            "username": "bob",
            "password": "bob-password-123",
            "csrfmiddlewaretoken": csrf.group(1),
        },
        headers={"Referer": stack.base_url + "/accounts/login/"},
        timeout=10,
    )
    assert logged_in.status_code == 200 and "Log out" in logged_in.text
    stream = OpenStream(stack.stream_url(session_id), cookies=browser.cookies)
    assert stream.response.status_code == 200
    page = browser.get(stack.base_url + "/", timeout=10)
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert csrf is not None
    browser.post(
        stack.base_url + "/accounts/logout/",
        data={"csrfmiddlewaretoken": csrf.group(1)},
        headers={"Referer": stack.base_url + "/"},
        timeout=10,
    )
    assert stream.ended.wait(5), "the stream outlived the logout"


def test_unknown_session_ids_are_looked_up_a_limited_number_of_times(stack: RelayStack) -> None:
    token = new_token(stack, "prober")
    auth = {"Authorization": f"Bearer {token}"}
    ids = [f"mbsess_probe{uuid.uuid4().hex[:8]}" for _ in range(6)]

    def upstream_reads() -> dict[str, int]:
        """Upstream look-ups of these ids (other sessions' relay traffic does not count)."""
        reads = stack.simulator.control.stats()["session_reads"]
        return {sid: reads[sid] for sid in ids if sid in reads}

    answers = [requests.get(stack.stream_url(sid), headers=auth, timeout=10) for sid in ids]
    codes = [answer.status_code for answer in answers]
    assert codes[:3] == [404, 404, 404]
    assert codes[3:] == [429, 429, 429]
    assert all(int(answer.headers["Retry-After"]) >= 1 for answer in answers[3:])
    assert upstream_reads() == dict.fromkeys(ids[:3], 1)
    # A known-unknown id is answered from the cache: no further upstream request.
    assert requests.get(stack.stream_url(ids[0]), headers=auth, timeout=10).status_code == 404
    assert upstream_reads() == dict.fromkeys(ids[:3], 1)
