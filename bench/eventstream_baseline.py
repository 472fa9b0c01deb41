"""django-eventstream 5.3 on daphne: the Django peer, as a baseline for the stream rows.

Installed from PyPI into a throwaway venv (`build/bench-venv`, untracked; rebuilt when the
requirement below changes), served from a minimal project generated into a temp dir at run
time: `GET /events/` (channel "bench", no storage) and `POST /publish?k=N`, which sends the
same ~110 B event as the floor (`fanout.EVENT_JSON`) as `event: status` from the server process.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from bench.fanout import EVENT_JSON, ROOT, ChildFailed, TargetProcess, child, free_port, log_tail

REQUIREMENTS = ["django-eventstream==5.3.*", "daphne"]
VENV = Path(os.getenv("MEETINGDASH_BENCH_VENV", str(ROOT / "build" / "bench-venv")))
VERSIONED = ("django-eventstream", "Django", "daphne", "Twisted", "channels")

SETTINGS = """
SECRET_KEY = "bench-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["django_eventstream"]
MIDDLEWARE = []
ROOT_URLCONF = "esbench.urls"
ASGI_APPLICATION = "esbench.asgi.application"
DATABASES = {}
USE_TZ = True
LOGGING_CONFIG = None
"""
URLS = """
from django.http import HttpResponse
from django.urls import include, path
from django.views.decorators.csrf import csrf_exempt
import django_eventstream
from django_eventstream import send_event

EVENT = %r


@csrf_exempt
def publish(request):
    k = int(request.GET["k"])
    send_event("bench", "status", EVENT %% k, json_encode=False)
    return HttpResponse("ok")


def ready(request):
    return HttpResponse("ok")


urlpatterns = [
    path("events/", include(django_eventstream.urls), {"channels": ["bench"]}),
    path("publish", publish),
    path("ready", ready),
]
"""
ASGI = """
import os
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "esbench.settings")
from django.core.asgi import get_asgi_application
application = get_asgi_application()
"""


def ensure_venv() -> Path:
    """The venv's python, built (about half a minute) unless it holds REQUIREMENTS already."""
    python = VENV / "bin" / "python"
    stamp = VENV / ".bench-requirements"
    if python.exists() and stamp.exists() and stamp.read_text() == " ".join(REQUIREMENTS):
        return python
    shutil.rmtree(VENV, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        + REQUIREMENTS,
        check=True,
        capture_output=True,
    )
    stamp.write_text(" ".join(REQUIREMENTS))
    return python


def versions() -> dict[str, str]:
    """Installed versions in the baseline's venv (empty if it was never built)."""
    python = VENV / "bin" / "python"
    if not python.exists():
        return {}
    script = (
        "import importlib.metadata as m, json\n"
        f"out = {{}}\nfor n in {list(VERSIONED)!r}:\n"
        "    try:\n        out[n] = m.version(n)\n"
        "    except m.PackageNotFoundError:\n        pass\nprint(json.dumps(out))"
    )
    result = subprocess.run([str(python), "-c", script], capture_output=True, text=True)
    return dict(json.loads(result.stdout or "{}"))


def write_project(directory: Path) -> None:
    package = directory / "esbench"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "settings.py").write_text(textwrap.dedent(SETTINGS))
    (package / "urls.py").write_text(textwrap.dedent(URLS % EVENT_JSON))
    (package / "asgi.py").write_text(textwrap.dedent(ASGI))


class DjangoEventstream:
    name = "django-eventstream 5.3 on daphne (baseline)"

    @contextlib.contextmanager
    def start(self) -> Iterator[TargetProcess]:
        python = ensure_venv()
        directory = Path(tempfile.mkdtemp(prefix="bench-eventstream-"))
        write_project(directory)
        port = free_port()
        daphne = ["-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "esbench.asgi:application"]
        try:
            # Its own settings, whatever this process runs under (pytest-django sets ours).
            env = {"DJANGO_SETTINGS_MODULE": "esbench.settings", "PYTHONPATH": str(directory)}
            with child(daphne, env, executable=str(python), cwd=directory) as server:
                base = f"http://127.0.0.1:{port}"
                deadline = time.monotonic() + 30
                while True:
                    try:
                        httpx.get(base + "/ready", timeout=1)
                        break
                    except httpx.TransportError as exc:
                        if server.poll() is not None or time.monotonic() > deadline:
                            raise ChildFailed(f"daphne did not start: {log_tail(server)}") from exc
                        time.sleep(0.1)
                control = httpx.Client(base_url=base, timeout=10)

                def publish(k: int) -> None:
                    control.post(f"/publish?k={k}").raise_for_status()

                request = (
                    f"GET /events/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                    "Accept: text/event-stream\r\n\r\n"
                ).encode()
                try:
                    yield TargetProcess(server.pid, "127.0.0.1", port, request, publish)
                finally:
                    control.close()
        finally:
            shutil.rmtree(directory, ignore_errors=True)
