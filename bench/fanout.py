"""Fan-out benchmark: our stream on one `serve` process vs a bare asyncio SSE server.

    python bench/fanout.py [--subscribers 100 1000] [--events 12] [--interval 0.5]

For each target and each N, in this same run:
1. start the target server (a child process); for MeetingDash also a simulator process
   (the upstream) and a temp SQLite database, so the path measured is the real one:
   simulator → relay (httpx) → SQLite → channel layer → hub → N SSE responses;
2. a separate load-client process (raw asyncio sockets, one regex per read) opens N
   subscriptions and reports when all got their response headers;
3. the server's RSS is sampled idle and with the N subscribers (KB per idle subscriber);
4. `--events` events are published `--interval` s apart (MeetingDash: a participant join
   emitted on the simulator; baseline: POST /publish); each publish's monotonic time is
   kept, each receipt's too (CLOCK_MONOTONIC is system-wide), per subscriber;
5. printed: p50 / p99 publish → receipt, events lost (missing or duplicated deliveries),
   server CPU µs per delivery (user+sys over the publish window / deliveries), KB per
   idle subscriber.

MeetingDash's latency includes the upstream hop and the SQLite write per event (stored
before broadcast), which the baseline does not have: that is the cost of the product.
Client and servers share the machine's cores, so compare ratios, not absolutes.

To add a row (e.g. the dashboard's live channel), write a `Target` with `start()` returning
a running `TargetProcess` (pid, subscribe request bytes, publish callable) and add it to
`TARGETS`. The pieces are reused by `bench.scenarios` and `bench.run` (`make bench`):
`simulated_deployment` (simulator, temp SQLite, credentials, `serve`), `LoadClient` /
`LoadConfig` (the load-client process and its commands: WAIT, LIVE, ZERO, DRAIN, RESULTS;
reconnecting clients, stalled readers, badges) and `deliveries` (latency, lost, duplicated).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# -- process measurements ---------------------------------------------------------------------


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def listen_overflows() -> int:
    """The kernel's count of connections dropped because a listen queue was full."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], values.split()[1:], strict=False))
            return int(table.get("ListenOverflows", 0))
    return 0


def send_queue_bytes(port: int) -> int:
    """Bytes the kernel holds unsent or unacknowledged on the server side of `port`'s
    connections (tx_queue in /proc/net/tcp): what a stalled reader costs below user space."""
    total = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
                    total += int(fields[4].split(":")[0], 16)
    return total


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


class ChildFailed(RuntimeError):
    """A child process exited early; the message carries the end of its log."""


@contextlib.contextmanager
def child(
    args: list[str],
    env: dict[str, str] | None = None,
    *,
    executable: str | None = None,
    cwd: Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """`python args...` (or `executable args...`) until the block ends, then SIGTERM."""
    log = tempfile.NamedTemporaryFile(prefix="bench-", suffix=".log", delete=False)  # noqa: SIM115
    argv = [executable, *args] if executable else [sys.executable, *args]
    process = subprocess.Popen(
        argv,
        cwd=cwd or ROOT,
        env={**os.environ, **(env or {})},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    process.log_path = log.name  # type: ignore[attr-defined]
    try:
        yield process
    finally:
        stop(process)
        log.close()
        Path(log.name).unlink(missing_ok=True)


def stop(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def log_tail(process: subprocess.Popen[Any], lines: int = 3) -> str:
    path = getattr(process, "log_path", None)
    if not path or not Path(path).exists():
        return ""
    text = Path(path).read_text(errors="replace").strip().splitlines()
    return " / ".join(line.strip() for line in text[-lines:])


# -- targets ----------------------------------------------------------------------------------


@dataclass
class TargetProcess:
    pid: int
    host: str
    port: int
    request: bytes  # the raw HTTP request one subscriber sends
    publish: Callable[[int], None]  # publish event k (its payload carries "p<k>")
    # Other processes whose CPU counts toward this target's (a separate relay, a 2nd server).
    extra_pids: tuple[int, ...] = ()


BENCH_ENV = {
    "MEETINGDASH_DISCOVERY_SECONDS": "0",
    "DJANGO_DEBUG": "0",
    "DJANGO_SECURE_SSL_REDIRECT": "0",
    "DJANGO_LOG_LEVEL": "WARNING",
    # One load client holds every connection: lift the per-client limits.
    "MEETINGDASH_MAX_STREAMS_PER_TOKEN": "100000",
    "MEETINGDASH_MAX_STREAMS_PER_USER": "100000",
    "MEETINGDASH_MAX_PAGES_PER_USER": "100000",
    "MEETINGDASH_MAX_WIDGETS_PER_TOKEN": "100000",
}
_MIGRATED: dict[str, Path] = {}  # one migrated SQLite file per run, copied per deployment


@dataclass
class SimulatedDeployment:
    """A simulator child, the environment of a `serve` that follows it (SQLite, embedded
    relay unless REDIS_URL), and one manual session on the simulator that the bench
    publishes to."""

    tmp: Path
    sim: str
    port: int
    session_id: str
    env: dict[str, str]
    control: httpx.Client
    made: dict[str, str]

    @property
    def db_path(self) -> Path:
        return self.tmp / "db.sqlite3"

    def manage(self, *args: str) -> str:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env={**os.environ, **self.env},
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    def shell(self, code: str) -> str:
        """The last word `manage.py shell -c code` printed (it may print an import note first)."""
        return self.manage("shell", "-c", code).split()[-1]

    def publish(self, k: int, pad: int = 0) -> None:
        """Publish event k (a join whose name carries "p<k>"; `pad` more bytes: "~xx…")."""
        name = f"p{k}" + ("~" + "x" * (pad - 1) if pad else "")
        self.control.post(
            f"/_control/sessions/{self.session_id}/emit", json={"join": name}
        ).raise_for_status()

    def credentials(self) -> dict[str, str]:
        """What `credentials_code` made while the simulator started: "api" (an API token),
        "page" (a logged-in browser session key), "widget" (a widget token)."""
        return self.made

    @contextlib.contextmanager
    def serve(self, port: int | None = None, **env: str) -> Iterator[subprocess.Popen[bytes]]:
        """`manage.py serve` on `port` (default: the deployment's), once /healthz answers."""
        port = port or self.port
        with child(["manage.py", "serve", "--port", str(port)], {**self.env, **env}) as server:
            try:
                wait_http(f"http://127.0.0.1:{port}/healthz")
            except RuntimeError as exc:
                raise ChildFailed(f"serve did not start: {log_tail(server)}") from exc
            yield server

    def wait_first_event(self, seconds: float = 30) -> None:
        deadline = time.monotonic() + seconds
        while not _stored_events(self.db_path, self.session_id):
            if time.monotonic() > deadline:
                raise RuntimeError("the relay never stored the session's first event")
            time.sleep(0.1)


def _migrated_template() -> Path:
    if "db" not in _MIGRATED:
        tmp = Path(tempfile.mkdtemp(prefix="bench-migrated-"))
        env = {**os.environ, **BENCH_ENV, "DATABASE_URL": f"sqlite:///{tmp / 'db.sqlite3'}"}
        env.update({"REDIS_URL": "", "DJANGO_SECRET_KEY": "bench-" + uuid.uuid4().hex})
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
        )
        _MIGRATED["db"] = tmp / "db.sqlite3"
    return _MIGRATED["db"]


def credentials_code(session_id: str, watch: bool) -> str:
    """For `manage.py shell -c`, by the project's own code: an API token, a logged-in browser
    session (the cookie a dashboard page's websocket sends), a widget token
    (`embed.make_token`); and `watch_session` if asked. Printed as one JSON word."""
    return f"""
import json
from django.contrib import auth
from django.contrib.auth.models import User
from django.contrib.sessions.backends.db import SessionStore
from django.core.management import call_command
from sessions_monitor import embed
from sessions_monitor.tokens import create_token
u, _ = User.objects.get_or_create(username="bench")
_, plain = create_token(user=u, name="bench")
s = SessionStore()
s[auth.SESSION_KEY] = str(u.pk)
s[auth.BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
s[auth.HASH_SESSION_KEY] = u.get_session_auth_hash()
s.create()
if {watch!r}:
    call_command("watch_session", {session_id!r})
out = {{"api": plain, "page": s.session_key, "widget": embed.make_token({session_id!r})}}
print(json.dumps(out, separators=(",", ":")))
"""


@contextlib.contextmanager
def simulated_deployment(
    prefix: str, redis_url: str = "", watch: bool = False
) -> Iterator[SimulatedDeployment]:
    """A simulator, a migrated temp SQLite file, credentials (made meanwhile: each Django
    start-up costs a second or two), one manual session; `watch`: the session is watched."""
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-{prefix}-"))
    sim_port, port = free_port(), free_port()
    sim = f"http://127.0.0.1:{sim_port}"
    env = {
        **BENCH_ENV,
        "DATABASE_URL": f"sqlite:///{tmp / 'db.sqlite3'}",
        "REDIS_URL": redis_url,
        "MEETINGBUDDY_API_URL": sim,
        "DJANGO_SECRET_KEY": "bench-" + uuid.uuid4().hex,
        "MEETINGDASH_METRICS_TOKEN": "bench-metrics",
    }
    session_id = f"mbsess_{prefix}{uuid.uuid4().hex[:8]}"
    shutil.copy(_migrated_template(), tmp / "db.sqlite3")
    making = subprocess.Popen(
        [sys.executable, "manage.py", "shell", "-c", credentials_code(session_id, watch)],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    sim_args = ["manage.py", "simulate_upstream", "--port", str(sim_port)]
    sim_args += ["--sessions", "0", "--no-arrivals", "--control", "--keepalive", "15"]
    try:
        # The simulator stands in for the upstream (it is not what is measured): development mode.
        with child(sim_args, env={"DJANGO_DEBUG": "1"}):
            wait_http(sim + "/_control/stats")
            out, err = making.communicate(timeout=120)
            if making.returncode:
                raise ChildFailed(f"making credentials failed: {err.strip()[-300:]}")
            made = json.loads(out.split()[-1])
            with httpx.Client(base_url=sim, timeout=10) as control:
                deployment = SimulatedDeployment(tmp, sim, port, session_id, env, control, made)
                control.post(
                    "/_control/sessions", json={"session_id": session_id, "manual": True}
                ).raise_for_status()
                yield deployment
    finally:
        if making.poll() is None:
            making.kill()
            making.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def metrics(port: int) -> dict[str, float]:
    """The serve process's /metrics, as {"name{labels}": value} (bench-metrics token)."""
    text = httpx.get(
        f"http://127.0.0.1:{port}/metrics",
        headers={"Authorization": "Bearer bench-metrics"},
        timeout=10,
    ).text
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                values[name] = float(value)
    return values


def stream_request(
    port: int, session_id: str, token: str, last_event_id: int | None = None
) -> bytes:
    resume = f"Last-Event-ID: {last_event_id}\r\n" if last_event_id is not None else ""
    return (
        f"GET /v1/meeting-buddy/sessions/{session_id}/stream HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
        f"Accept: text/event-stream\r\n{resume}\r\n"
    ).encode()


def ws_request(port: int, path: str, cookie: str | None = None) -> bytes:
    """A browser's WebSocket upgrade (a fixed key: the client does not check the accept)."""
    cookie_line = f"Cookie: sessionid={cookie}\r\n" if cookie else ""
    return (
        f"GET {path} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\nOrigin: http://127.0.0.1:{port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: bWVldGluZ2Rhc2hiZW5jaA==\r\nSec-WebSocket-Version: 13\r\n"
        f"{cookie_line}\r\n"
    ).encode()


def warm_stream(port: int, session_id: str, token: str) -> None:
    """One subscription makes the session known, watched and followed, so what is measured
    next excludes one-time costs (imports, relay task, feed)."""
    with httpx.stream(
        "GET",
        f"http://127.0.0.1:{port}/v1/meeting-buddy/sessions/{session_id}/stream",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    ) as warm:
        assert warm.status_code == 200, warm.read()
        next(warm.iter_bytes())


class MeetingDashStream:
    """Our stream on one `serve` process (embedded relay, SQLite, simulator upstream)."""

    name = "MeetingDash /v1/.../stream (serve, daphne)"

    @contextlib.contextmanager
    def start(self) -> Iterator[TargetProcess]:
        with simulated_deployment("bench") as deployment:
            port, session_id = deployment.port, deployment.session_id
            token = deployment.credentials()["api"]
            with deployment.serve() as server:
                warm_stream(port, session_id, token)
                request = stream_request(port, session_id, token)
                yield TargetProcess(server.pid, "127.0.0.1", port, request, deployment.publish)


class BareAsyncio:
    """The floor: a raw asyncio server, one writer list, no framework."""

    name = "bare asyncio SSE server (baseline)"

    @contextlib.contextmanager
    def start(self) -> Iterator[TargetProcess]:
        port = free_port()
        with child([str(Path(__file__)), "--baseline-server", str(port)]) as server:
            wait_http(f"http://127.0.0.1:{port}/ready")
            control = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)

            def publish(k: int) -> None:
                control.post(f"/publish?k={k}").raise_for_status()

            request = f"GET /stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
            try:
                yield TargetProcess(server.pid, "127.0.0.1", port, request, publish)
            finally:
                control.close()


TARGETS: list[Any] = [BareAsyncio(), MeetingDashStream()]

# The event every stream target publishes (the floor, django-eventstream): ~110 B of JSON.
EVENT_JSON = '{"session_id":"mbsess_bench","participant_name":"p%d","event":"joined","timestamp":"2026-01-01T00:00:00Z"}'


async def baseline_server(port: int) -> None:
    writers: set[asyncio.StreamWriter] = set()
    headers = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
        b"transfer-encoding: chunked\r\n\r\n"
    )

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        line = request.split(b"\r\n", 1)[0]
        if line.startswith(b"GET /stream"):
            writer.write(headers)
            writers.add(writer)
            with contextlib.suppress(Exception):
                await reader.read()
            writers.discard(writer)
            return
        if line.startswith(b"POST /publish"):
            k = int(line.split(b"k=")[1].split()[0])
            data = (EVENT_JSON % k).encode()
            frame = b"id: %d\nevent: status\ndata: %s\n\n" % (k, data)
            chunk = b"%x\r\n%s\r\n" % (len(frame), frame)
            for target in tuple(writers):
                target.write(chunk)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


# -- load client (a separate process) ---------------------------------------------------------
#
# One process, raw asyncio sockets, one regex per read. Configured by one JSON line on stdin
# (`LoadConfig`), then driven by commands, one per line, each answered by one JSON line:
#   WAIT k seconds   until every reading subscriber has event k (badge: a state >= k)
#   LIVE g seconds   until every subscriber has connected g times (reconnects after a restart)
#   ZERO             reset the byte counters (bytes per delivery over what follows)
#   DRAIN k seconds  stalled subscribers start reading: until each has k, or its EOF
#   RESULTS          every subscriber's receipts; then the client exits

SCAN = re.compile(
    rb'"participant_name":"p(?P<p>\d+)(?:~x*)?"|class="event-summary">p(?P<w>\d+) joined<'
    rb'|(?<![\w"])id: (?P<id>\d+)\n|<li id="event-(?P<row>\d+)" class="event '
    rb'|id="live-after" name="after" value="(?P<after>\d+)"'
    rb'|data-participants="(?P<badge>\d+)"'
    rb'|(?P<note>id="resync-note"|: live feed lost)'
)


# Bytes kept from one read for the next: more than any frame we scan, so a mark cut by a
# read boundary is found in the next read.
TAIL = 2048


@dataclass
class LoadConfig:
    endpoints: list[tuple[str, int, str]]  # (host, port, request head) by subscriber % len
    n: int
    mark: str = "join"  # "join": event k carries "p<k>"; "badge": data-participants="k"
    hello: str = ""  # a WebSocket text payload sent after the upgrade; {after} is filled in
    after: int = 0  # the page's initial watermark
    last_event_id: bool = False  # send Last-Event-ID (the last id seen) on each reconnect
    reconnect: bool = False  # on EOF, reconnect as the page does (jittered backoff)
    stalled: int = 0  # extra subscribers that stop reading at the TCP level after the head
    rcvbuf: int = 4096
    ready_seconds: float = 120.0
    connect_rate: float = 1000.0  # new connections per second (in batches of 50)


class Subscriber:
    def __init__(self, index: int, stalled: bool, after: int) -> None:
        self.index = index
        self.stalled = stalled
        self.marks: dict[int, list[int]] = {}
        self.ids: list[int] = []
        self.after = after
        self.connects = 0
        self.connected_at = 0
        self.eofs = 0
        self.notes = 0
        self.bytes = 0
        self.top = 0  # badge: the newest state seen
        self.transport: asyncio.Transport | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.error = ""
        self.failures = 0  # attempts refused, reset or answered with an error
        self.websocket = False  # the last connection was upgraded (101): read frames

    def has(self, k: int, badge: bool) -> bool:
        return self.top >= k if badge else k in self.marks

    def last_id(self) -> int | None:
        return self.ids[-1] if self.ids else None

    def result(self) -> dict[str, Any]:
        return {
            "m": {str(k): v for k, v in self.marks.items()},
            "ids": self.ids,
            "c": self.connects,
            "f": self.failures,
            "e": self.eofs,
            "notes": self.notes,
            "bytes": self.bytes,
            "stalled": self.stalled,
        }


def ws_text_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """A client→server frame (a zero mask key is valid and keeps the bytes readable)."""
    assert len(payload) < 126
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + b"\x00\x00\x00\x00" + payload


def ws_frames(buffer: bytes) -> tuple[bytes, list[bytes], bytes]:
    """Server→client frames (unmasked) in `buffer`: (the text payloads joined, the payloads
    of pings, the incomplete rest). A browser answers daphne's pings (every 20 s, closing a
    socket without a pong after 30 s more); a load client that did not would see every
    socket reset after a minute and measure reconnects instead of deliveries."""
    text: list[bytes] = []
    pings: list[bytes] = []
    at = 0
    while len(buffer) - at >= 2:
        opcode, length, head = buffer[at] & 0x0F, buffer[at + 1] & 0x7F, 2
        if length == 126:
            if len(buffer) - at < 4:
                break
            length, head = int.from_bytes(buffer[at + 2 : at + 4], "big"), 4
        elif length == 127:
            if len(buffer) - at < 10:
                break
            length, head = int.from_bytes(buffer[at + 2 : at + 10], "big"), 10
        if len(buffer) - at < head + length:
            break
        payload = buffer[at + head : at + head + length]
        if opcode in (0x0, 0x1):
            text.append(payload)
        elif opcode == 0x9:
            pings.append(payload)
        at += head + length
    return b"".join(text), pings, buffer[at:]


class Load:
    def __init__(self, config: LoadConfig) -> None:
        self.config = config
        self.badge = config.mark == "badge"
        self.subs = [Subscriber(i, False, config.after) for i in range(config.n)]
        self.subs += [Subscriber(config.n + i, True, config.after) for i in range(config.stalled)]
        self.changed = asyncio.Event()  # set on every receipt or connect; waiters re-check
        self.drain = asyncio.Event()
        self.stopping = False

    def notify(self) -> None:
        self.changed.set()

    async def until(self, predicate: Callable[[], bool], seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while not predicate():
            self.changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(left, 0.5))
        return True

    def request_for(self, sub: Subscriber, head: str) -> tuple[bytes, bytes]:
        request = head.encode("latin-1")
        last_id = sub.last_id()
        if self.config.last_event_id and last_id is not None:
            request = request[:-2] + b"Last-Event-ID: %d\r\n\r\n" % last_id
        hello = b""
        if self.config.hello:
            hello = ws_text_frame(self.config.hello.replace("{after}", str(sub.after)).encode())
        return request, hello

    async def connect(self, sub: Subscriber) -> asyncio.StreamReader | None:
        host, port, head = self.config.endpoints[sub.index % len(self.config.endpoints)]
        loop = asyncio.get_running_loop()
        sock = socket.socket()
        if sub.stalled:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.config.rcvbuf)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, (host, port))
            reader, writer = await asyncio.open_connection(sock=sock)
        except OSError as exc:
            sock.close()
            sub.error = f"connect: {exc!r}"
            return None
        request, hello = self.request_for(sub, head)
        writer.write(request)
        try:
            response = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, OSError) as exc:
            writer.close()
            sub.error = f"no response head: {exc!r}"[:200]
            return None
        if not re.search(rb" (200|101) ", response.split(b"\r\n", 1)[0]):
            writer.close()
            if self.config.reconnect:
                return None  # e.g. a 503 while the restarted server warms up
            raise RuntimeError(response.decode(errors="replace")[:300])
        # Bytes after the request head (a WebSocket hello frame) go out once the response
        # head is in: servers do not read frames pipelined with the upgrade.
        sub.websocket = b" 101 " in response.split(b"\r\n", 1)[0]
        if hello:
            writer.write(hello)
        sub.writer = writer  # an unreferenced StreamWriter closes its transport
        sub.transport = writer.transport  # type: ignore[assignment]
        if sub.stalled and not self.drain.is_set():
            sub.transport.pause_reading()  # type: ignore[union-attr]
        sub.connects += 1
        sub.connected_at = time.monotonic_ns()
        self.notify()
        return reader

    def scan(self, sub: Subscriber, data: bytes, now: int) -> int:
        end = 0
        for match in SCAN.finditer(data):
            end = match.end()
            group = match.lastgroup
            value = match.group(group) if group else None
            if group in ("p", "w"):
                sub.marks.setdefault(int(value), []).append(now)  # type: ignore[arg-type]
            elif group in ("id", "row"):
                sub.ids.append(int(value))  # type: ignore[arg-type]
            elif group == "after":
                sub.after = int(value)  # type: ignore[arg-type]
            elif group == "badge":
                state = int(value)  # type: ignore[arg-type]
                sub.marks.setdefault(state, []).append(now)
                sub.top = max(sub.top, state)
            elif group == "note":
                sub.notes += 1
        return end

    async def run_one(self, sub: Subscriber) -> None:
        retries = 0
        while not self.stopping:
            reader = await self.connect(sub)
            if reader is None:
                sub.failures += 1
                if not self.config.reconnect:
                    raise RuntimeError(sub.error)
                # The page's backoff (static/js/live.js): random up to min(5 s, 0.5 s × 2^n).
                await asyncio.sleep(random.random() * min(5.0, 0.5 * 2**retries))
                retries += 1
                continue
            retries = 0
            tail = partial = b""
            while True:
                try:
                    chunk = await reader.read(65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    break
                now = time.monotonic_ns()
                sub.bytes += len(chunk)
                if sub.websocket:
                    chunk, pings, partial = ws_frames(partial + chunk)
                    for ping in pings:
                        if sub.writer is not None:
                            sub.writer.write(ws_text_frame(ping, opcode=0xA))
                data = tail + chunk
                end = self.scan(sub, data, now)
                tail = data[max(end, len(data) - TAIL) :]
                self.notify()
            sub.eofs += 1
            if sub.writer is not None:
                sub.writer.close()
            sub.transport = sub.writer = None
            self.notify()
            if not self.config.reconnect:
                return
            await asyncio.sleep(random.random() * 0.5)

    async def command(self, words: list[str]) -> dict[str, Any]:
        name = words[0]
        reading = [s for s in self.subs if not s.stalled]
        if name == "WAIT":
            k, seconds = int(words[1]), float(words[2])
            ok = await self.until(lambda: all(s.has(k, self.badge) for s in reading), seconds)
            return {"ok": ok, "missing": sum(not s.has(k, self.badge) for s in reading)}
        if name == "LIVE":
            g, seconds = int(words[1]), float(words[2])

            def live() -> bool:
                return all(s.connects >= g and s.transport is not None for s in self.subs)

            ok = await self.until(live, seconds)
            return {
                "ok": ok,
                "live": sum(s.connects >= g and s.transport is not None for s in self.subs),
                "last_connect_ns": max(s.connected_at for s in self.subs),
            }
        if name == "ZERO":
            for sub in self.subs:
                sub.bytes = 0
            return {"ok": True}
        if name == "DRAIN":
            k, seconds = int(words[1]), float(words[2])
            self.drain.set()
            stalled = [s for s in self.subs if s.stalled]
            for sub in stalled:
                if sub.transport is not None:
                    sub.transport.resume_reading()
            ok = await self.until(
                lambda: all(s.has(k, self.badge) or s.transport is None for s in stalled), seconds
            )
            return {"ok": ok}
        raise ValueError(name)


async def load_client(config: LoadConfig) -> None:
    """Open the subscriptions; print READY; answer commands; print the receipts at the end."""
    load = Load(config)
    tasks = []
    for sub in load.subs:
        tasks.append(asyncio.create_task(load.run_one(sub)))
        if sub.index % 50 == 49:
            await asyncio.sleep(50 / config.connect_rate)  # do not SYN-flood the accept queue
    connected = await load.until(
        lambda: all(s.connects for s in load.subs) or any(t.done() for t in tasks),
        config.ready_seconds,
    )
    failed = [t for t in tasks if t.done() and t.exception()]
    count = sum(bool(s.connects) for s in load.subs)
    why = f"{failed[0].exception()!r}"[:300] if failed else ""
    print(json.dumps({"ready": connected and not failed, "connected": count, "why": why}))
    sys.stdout.flush()
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        words = line.split()
        if not words or words[0] == "RESULTS":
            break
        print(json.dumps(await load.command(words)), flush=True)
    load.stopping = True
    for task in tasks:
        task.cancel()
    print(json.dumps([sub.result() for sub in load.subs]), flush=True)


class NotMeasured(Exception):
    """A row that could not be measured; its message says why (printed in the table)."""


class LoadClient:
    """The parent's handle on a load-client process."""

    def __init__(self, config: LoadConfig) -> None:
        self.overflows = listen_overflows()
        self.limit = config.ready_seconds
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__)), "--load-client"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(asdict(config)) + "\n")
        self.process.stdin.flush()

    def ask(self, line: str) -> Any:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline()
        if not answer:
            raise RuntimeError(
                f"the load client exited ({self.process.wait(10)}) after {line[:40]}"
            )
        return json.loads(answer)

    def ready(self, n: int) -> None:
        answer = self.ask_ready()
        if not answer["ready"]:
            self.close()
            overflows = listen_overflows() - self.overflows
            raise NotMeasured(
                f"{answer['connected']} of {n} subscribers connected"
                + (f" ({answer['why']})" if answer["why"] else f" within {self.limit:g} s")
                + (f"; the kernel counted {overflows} listen-queue overflows" if overflows else "")
            )

    def ask_ready(self) -> Any:
        assert self.process.stdout is not None
        answer = self.process.stdout.readline()
        if not answer:
            raise RuntimeError("the load client exited before it was ready")
        return json.loads(answer)

    def results(self) -> list[dict[str, Any]]:
        receipts = self.ask("RESULTS")
        self.process.wait(30)
        return list(receipts)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def __enter__(self) -> LoadClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- one run ----------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def deliveries(
    receipts: list[dict[str, Any]], published: dict[int, int], badge: bool = False
) -> dict[str, Any]:
    """Latency (ms) of each published event at each reading subscriber, losses, duplicates.

    A badge shows only the latest state: event k reached it when any state >= k did."""
    latencies: list[float] = []
    lost = duplicated = 0
    per_event: dict[int, list[float]] = {k: [] for k in published}
    for subscriber in receipts:
        if subscriber["stalled"]:
            continue
        marks = {int(k): v for k, v in subscriber["m"].items()}
        if badge:
            firsts = sorted((min(times), state) for state, times in marks.items())
        for k, sent in published.items():
            if badge:
                at = [t for t, state in firsts if state >= k]
                times = at[:1]
            else:
                times = marks.get(k, [])
                duplicated += max(0, len(times) - 1)
            if not times:
                lost += 1
                continue
            ms = (times[0] - sent) / 1e6
            latencies.append(ms)
            per_event[k].append(ms)
    return {
        "latencies": latencies,
        "per_event": per_event,
        "p50_ms": statistics.median(latencies) if latencies else float("nan"),
        "p99_ms": percentile(latencies, 0.99),
        "lost": lost,
        "duplicated": duplicated,
        "deliveries": len(latencies),
    }


def process_cpu(pids: tuple[int, ...]) -> float:
    return sum(cpu_seconds(pid) for pid in pids)


def measure(
    target: Any, n: int, events: int, interval: float, settle: float = 1.0
) -> dict[str, Any]:
    """One target at n subscribers: `events` isolated events `interval` s apart (RSS is
    sampled `settle` s after start and after the subscribers connected)."""
    with target.start() as running:
        time.sleep(settle)
        pids = (running.pid, *running.extra_pids)
        idle_kb = sum(rss_kb(pid) for pid in pids)
        config = getattr(target, "load_config", None)
        if config is None:
            config = LoadConfig(
                [(running.host, running.port, running.request.decode("latin-1"))], n
            )
        else:
            config = config(running, n)
        with LoadClient(config) as client:
            client.ready(n)
            time.sleep(settle)
            loaded_kb = sum(rss_kb(pid) for pid in pids)
            client.ask("ZERO")
            cpu_before = process_cpu(pids)
            published: dict[int, int] = {}
            for k in range(1, events + 1):
                published[k] = time.monotonic_ns()
                running.publish(k)
                time.sleep(interval)
            client.ask(f"WAIT {events} 10")
            cpu_after = process_cpu(pids)
            receipts = client.results()
    result = deliveries(receipts, published, badge=config.mark == "badge")
    count = max(1, result["deliveries"])
    return {
        "target": target.name,
        "n": n,
        "p50_ms": result["p50_ms"],
        "p99_ms": result["p99_ms"],
        "lost": result["lost"],
        "duplicated": result["duplicated"],
        "cpu_us_per_delivery": (cpu_after - cpu_before) * 1e6 / count,
        "kb_per_subscriber": (loaded_kb - idle_kb) / n,
        "bytes_per_delivery": sum(r["bytes"] for r in receipts) / count,
        "failed_attempts": sum(r["f"] for r in receipts),
    }


# == The dashboard's live channel (DASH) =======================================================
#
# The same `serve` + simulator path as MeetingDashStream, but the subscribers are the detail
# page's WebSocket (`/ws/sessions/<id>/`, logged-in session cookie): each delivery is the
# server-rendered HTML frame (event row + re-rendered regions), rendered once per process per
# event and shared by every viewer. The raw request is the HTTP upgrade followed by the page's
# hello frame (`{"after": <last stored seq>}`, what a freshly rendered page sends), masked as a
# browser would send it.


def _stored_events(db_path: Path, session_id: str) -> int:
    import sqlite3

    with contextlib.closing(sqlite3.connect(db_path, timeout=10)) as db:
        query = "SELECT count(*) FROM sessions_monitor_sessionevent WHERE session_id = ?"
        return int(db.execute(query, (session_id,)).fetchone()[0])


def last_seq(db_path: Path, session_id: str) -> int:
    import sqlite3

    with contextlib.closing(sqlite3.connect(db_path, timeout=10)) as db:
        query = "SELECT max(seq) FROM sessions_monitor_sessionevent WHERE session_id = ?"
        return int(db.execute(query, (session_id,)).fetchone()[0] or 0)


PAGE_HELLO = '{"after": {after}}'


class DashboardLiveChannel:
    name = "MeetingDash dashboard live channel (ws, HTML)"

    @contextlib.contextmanager
    def start(self) -> Iterator[TargetProcess]:
        with simulated_deployment("dash", watch=True) as deployment:
            port, session_id = deployment.port, deployment.session_id
            session_key = deployment.credentials()["page"]
            with deployment.serve() as server:
                deployment.wait_first_event()
                request = ws_request(port, f"/ws/sessions/{session_id}/", session_key)
                self.after = last_seq(deployment.db_path, session_id)
                yield TargetProcess(server.pid, "127.0.0.1", port, request, deployment.publish)

    def load_config(self, running: TargetProcess, n: int) -> LoadConfig:
        # The page's watermark: a freshly rendered page holds everything stored so far.
        # A connection reset while 1,000 pages open at once is retried, as the page does
        # (static/js/live.js); `measure` reports how many attempts failed.
        endpoint = (running.host, running.port, running.request.decode("latin-1"))
        return LoadConfig([endpoint], n, hello=PAGE_HELLO, after=self.after, reconnect=True)


TARGETS.append(DashboardLiveChannel())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--events", type=int, default=12)
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--baseline-server", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--load-client", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_server:
        asyncio.run(baseline_server(args.baseline_server))
        return
    if args.load_client:
        fields = json.loads(sys.stdin.readline())
        fields["endpoints"] = [tuple(e) for e in fields["endpoints"]]
        asyncio.run(load_client(LoadConfig(**fields)))
        return
    print(
        f"{'target':<44} {'N':>5} {'p50 ms':>8} {'p99 ms':>8} {'lost':>5} {'dup':>4} {'CPU µs/deliv':>12} {'KB/sub':>7}"
    )
    for n in args.subscribers:
        for target in TARGETS:
            r = measure(target, n, args.events, args.interval)
            print(
                f"{r['target']:<44} {r['n']:>5} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} {r['lost']:>5}"
                f" {r['duplicated']:>4} {r['cpu_us_per_delivery']:>12.0f} {r['kb_per_subscriber']:>7.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
