"""Clients for the simulator's `/_control/` API (tests and benches), sync and async twins."""

from __future__ import annotations

from typing import Any

import httpx

from .faults import FAULT_FIELDS


def _session_body(
    session_id: str | None,
    bot_name: str | None,
    platform: str | None,
    meeting_link: str | None,
    script: list[dict[str, Any]] | None,
    manual: bool,
    transcription: dict[str, Any] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "session_id": session_id,
        "bot_name": bot_name,
        "platform": platform,
        "meeting_link": meeting_link,
        "script": script,
    }
    body = {key: value for key, value in body.items() if value is not None}
    if manual:
        body["manual"] = True
    return {**body, **(transcription or {})}


def _fault_body(session_id: str | None, knobs: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(knobs) - set(FAULT_FIELDS))
    if unknown:
        raise TypeError(f"unknown fault knobs: {', '.join(unknown)}")
    return {**knobs, **({"session_id": session_id} if session_id else {})}


def _json(response: httpx.Response) -> Any:
    response.raise_for_status()
    return response.json()


class SimulatorControl:
    """`SimulatorControl("http://127.0.0.1:8765")`: drive a running simulator."""

    def __init__(self, base_url: str, *, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = httpx.Client(base_url=self.base_url, timeout=timeout)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> SimulatorControl:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def create_session(
        self,
        *,
        session_id: str | None = None,
        bot_name: str | None = None,
        platform: str | None = None,
        meeting_link: str | None = None,
        script: list[dict[str, Any]] | None = None,
        manual: bool = False,
        transcription: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """`transcription`: e.g. `{"transcription_enabled": False}` (on by default)."""
        body = _session_body(
            session_id, bot_name, platform, meeting_link, script, manual, transcription
        )
        return dict(_json(self._client.post("/_control/sessions", json=body)))

    def emit(self, session_id: str, **step: Any) -> dict[str, Any]:
        """`emit(sid, status="active")`, `emit(sid, join="Alice")`, `emit(sid, leave=...)`."""
        return dict(_json(self._client.post(f"/_control/sessions/{session_id}/emit", json=step)))

    def set_faults(self, session_id: str | None = None, **knobs: Any) -> dict[str, Any]:
        body = _fault_body(session_id, knobs)
        return dict(_json(self._client.post("/_control/faults", json=body)))

    def forget(self, session_id: str) -> None:
        """The upstream no longer knows the session: 404 from now on, its streams cut."""
        _json(self._client.delete(f"/_control/sessions/{session_id}"))

    def reset_faults(self, session_id: str | None = None) -> None:
        params = {"session_id": session_id} if session_id else None
        _json(self._client.delete("/_control/faults", params=params))

    def faults(self) -> dict[str, Any]:
        return dict(_json(self._client.get("/_control/faults")))

    def stats(self) -> dict[str, Any]:
        return dict(_json(self._client.get("/_control/stats")))


class AsyncSimulatorControl:
    """The async twin of `SimulatorControl` (same methods, awaitable)."""

    def __init__(self, base_url: str, *, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = httpx.AsyncClient(base_url=self.base_url, timeout=timeout)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> AsyncSimulatorControl:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def create_session(
        self,
        *,
        session_id: str | None = None,
        bot_name: str | None = None,
        platform: str | None = None,
        meeting_link: str | None = None,
        script: list[dict[str, Any]] | None = None,
        manual: bool = False,
        transcription: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """`transcription`: e.g. `{"transcription_enabled": False}` (on by default)."""
        body = _session_body(
            session_id, bot_name, platform, meeting_link, script, manual, transcription
        )
        return dict(_json(await self._client.post("/_control/sessions", json=body)))

    async def emit(self, session_id: str, **step: Any) -> dict[str, Any]:
        response = await self._client.post(f"/_control/sessions/{session_id}/emit", json=step)
        return dict(_json(response))

    async def set_faults(self, session_id: str | None = None, **knobs: Any) -> dict[str, Any]:
        body = _fault_body(session_id, knobs)
        return dict(_json(await self._client.post("/_control/faults", json=body)))

    async def forget(self, session_id: str) -> None:
        _json(await self._client.delete(f"/_control/sessions/{session_id}"))

    async def reset_faults(self, session_id: str | None = None) -> None:
        params = {"session_id": session_id} if session_id else None
        _json(await self._client.delete("/_control/faults", params=params))

    async def faults(self) -> dict[str, Any]:
        return dict(_json(await self._client.get("/_control/faults")))

    async def stats(self) -> dict[str, Any]:
        return dict(_json(await self._client.get("/_control/stats")))
