"""The services policy: a test needing Redis, PostgreSQL or Chromium skips on a developer
machine without them, and FAILS where CI requires them (MEETINGDASH_REQUIRE_SERVICES=1)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT, free_port

PROBE = """
def test_needs_redis(redis_url):
    assert redis_url
"""


def run_probe(tmp_path: Path, *, require: bool) -> subprocess.CompletedProcess[str]:
    probe = tmp_path / "test_probe.py"
    probe.write_text(PROBE)
    closed_port = free_port()  # nothing listens there
    env = {
        **os.environ,
        "REDIS_URL": f"redis://127.0.0.1:{closed_port}/0",
        "MEETINGDASH_REQUIRE_SERVICES": "1" if require else "0",
    }
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "tests.conftest", str(probe)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_an_unreachable_service_fails_the_run_when_ci_requires_it(tmp_path: Path) -> None:
    result = run_probe(tmp_path, require=True)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "required service missing: Redis at REDIS_URL is unreachable" in result.stdout


@pytest.mark.slow
def test_an_unreachable_service_skips_on_a_developer_machine(tmp_path: Path) -> None:
    result = run_probe(tmp_path, require=False)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 skipped" in result.stdout
    assert "Redis at REDIS_URL is unreachable" in result.stdout
