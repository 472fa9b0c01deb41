"""Real receivers for alert deliveries: an HTTP server for webhooks and an SMTP server.

Both run on 127.0.0.1 in this process (threads), on free ports, and record everything they
receive. `tests/conftest.py` imports the fixtures, so any test module can ask for them.
"""

from __future__ import annotations

import email
import email.policy
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from tests.support import free_port

HOLD_LIMIT_SECONDS = 30.0


@dataclass(frozen=True)
class ReceivedRequest:
    method: str
    path: str  # with the query string
    headers: dict[str, str]  # lower-cased names
    body: bytes


class WebhookReceiver:
    """A real HTTP server answering a scripted sequence of statuses (then `default_status`).

    `hold()` makes the next requests wait, recorded but unanswered, until `release()`: a
    sender can be killed while its request is in flight."""

    def __init__(self) -> None:
        self.requests: list[ReceivedRequest] = []
        self.default_status = 200
        self._script: list[int] = []
        self._lock = threading.Condition()
        self._released = threading.Event()
        self._released.set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver._handle(self)

            do_GET = do_POST
            do_PUT = do_POST

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url_for(self, path: str) -> str:
        return self.url + path

    def script(self, *statuses: int) -> None:
        """Answer the next requests with these statuses, in order."""
        with self._lock:
            self._script = list(statuses)

    def hold(self) -> None:
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    def wait_for(self, count: int, seconds: float = 10.0) -> list[ReceivedRequest]:
        """Block until at least `count` requests have arrived; return them all."""
        deadline = time.monotonic() + seconds
        with self._lock:
            while len(self.requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"the receiver got {len(self.requests)} requests, expected {count}"
                    )
                self._lock.wait(left)
            return list(self.requests)

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("content-length") or 0)
        body = handler.rfile.read(length) if length else b""
        request = ReceivedRequest(
            method=handler.command,
            path=handler.path,
            headers={name.lower(): value for name, value in handler.headers.items()},
            body=body,
        )
        with self._lock:
            self.requests.append(request)
            status = self._script.pop(0) if self._script else self.default_status
            self._lock.notify_all()
        self._released.wait(HOLD_LIMIT_SECONDS)
        answer = b'{"ok": true}' if 200 <= status < 300 else b'{"ok": false}'
        try:
            handler.send_response(status)
            handler.send_header("content-type", "application/json")
            handler.send_header("content-length", str(len(answer)))
            handler.end_headers()
            handler.wfile.write(answer)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the sender went away while the request was held: what a kill test wants

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    """A real HTTP server on 127.0.0.1 recording every request (see `WebhookReceiver`)."""
    receiver = WebhookReceiver()
    receiver.start()
    yield receiver
    receiver.close()


@dataclass
class ReceivedMail:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage


@dataclass
class _Recorder:
    messages: list[ReceivedMail] = field(default_factory=list)
    refuse_with: str = ""  # an SMTP reply, e.g. "554 5.7.1 rejected": refuse DATA with it
    arrived: threading.Event = field(default_factory=threading.Event)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.refuse_with:
            return self.refuse_with
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append(ReceivedMail(envelope.mail_from, list(envelope.rcpt_tos), parsed))
        self.arrived.set()
        return "250 Message accepted for delivery"


class SmtpServer:
    """A real aiosmtpd server; `messages` holds what it accepted, parsed."""

    def __init__(self) -> None:
        self.recorder = _Recorder()
        self.port = free_port()
        self.controller = Controller(self.recorder, hostname="127.0.0.1", port=self.port)

    @property
    def messages(self) -> list[ReceivedMail]:
        return self.recorder.messages

    def refuse(self, reply: str) -> None:
        self.recorder.refuse_with = reply

    def point_django_at_it(self, settings: Any) -> None:
        """Make Django send mail here, through its real SMTP backend."""
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST = "127.0.0.1"
        settings.EMAIL_PORT = self.port
        settings.EMAIL_HOST_USER = ""
        settings.EMAIL_HOST_PASSWORD = ""
        settings.EMAIL_USE_TLS = False


@pytest.fixture
def smtp_server(settings: Any) -> Iterator[SmtpServer]:
    """A real SMTP server on a free port, and Django's EMAIL_* pointed at it for this test
    (pytest-django otherwise swaps in the in-memory backend)."""
    server = SmtpServer()
    server.controller.start()
    server.point_django_at_it(settings)
    yield server
    server.controller.stop()
