"""Participants already in the meeting when MeetingDash starts watching it.

The upstream stream only reports joins from its start on; the session object says who is
present. The relay records those as joins (noted as such) before it opens the stream.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from channels.db import database_sync_to_async

from sessions_monitor import services
from sessions_monitor.models import EventKind, MeetingSession, Presence, SessionEvent
from sessions_monitor.upstream import UpstreamSession
from sessions_monitor.upstream.events import ParticipantJoined, ParticipantLeft, StatusChanged
from tests.support import eventually, fast_relay


def sid() -> str:
    return f"mbsess_seed{uuid.uuid4().hex[:10]}"


def upstream_session(current_participants: object) -> UpstreamSession:
    return UpstreamSession.from_json(
        {
            "session_id": "mbsess_x",
            "status": "recording",
            "current_participants": current_participants,
        }
    )


@pytest.mark.parametrize(
    ("value", "names"),
    [
        pytest.param(["Alice", "Zoë"], ("Alice", "Zoë"), id="list-of-names"),
        pytest.param({"count": 2, "names": ["Alice", "Bob"]}, ("Alice", "Bob"), id="object-names"),
        pytest.param([{"name": "Alice"}, {"id": 3}], ("Alice",), id="list-of-objects"),
        pytest.param({"participants": ["Bob", " ", 7]}, ("Bob",), id="object-participants"),
        pytest.param(None, (), id="null"),
        pytest.param({"count": 3}, (), id="count-only"),
        pytest.param("Alice", (), id="string"),
    ],
)
def test_it_reads_present_names_from_every_shape_seen(
    value: object, names: tuple[str, ...]
) -> None:
    assert upstream_session(value).present_participant_names == names


@pytest.mark.django_db
def test_it_seeds_unknown_participants_as_noted_joins() -> None:
    session_id = sid()
    services.record_event(
        session_id=session_id,
        event=StatusChanged(session_id, "recording", "recording", None),
        broadcast=False,
    )

    recorded = services.seed_presence(
        session_id=session_id, names=["Alice", "Łukasz", "Alice"], raw="{}", broadcast=False
    )

    assert [r.event["participant_name"] for r in recorded] == ["Alice", "Łukasz"]
    joins = SessionEvent.objects.filter(session_id=session_id, kind=EventKind.JOINED)
    assert {e.note for e in joins} == {services.SEEDED_PRESENCE_NOTE}
    assert MeetingSession.objects.get(pk=session_id).participants_present == 2
    assert Presence.objects.filter(session_id=session_id, left_at__isnull=True).count() == 2


@pytest.mark.django_db
def test_the_stream_wins_over_the_snapshot_for_names_it_already_told_us() -> None:
    session_id = sid()
    for event in (
        StatusChanged(session_id, "recording", "recording", None),
        ParticipantJoined(session_id, "Alice", None),
        ParticipantLeft(session_id, "Alice", None),
    ):
        services.record_event(session_id=session_id, event=event, broadcast=False)

    assert services.seed_presence(session_id=session_id, names=["Alice"], broadcast=False) == []
    assert services.seed_presence(session_id=session_id, names=["Bob"], broadcast=False) != []
    # Seeding twice (a relay restart) adds nothing.
    assert services.seed_presence(session_id=session_id, names=["Bob"], broadcast=False) == []
    assert MeetingSession.objects.get(pk=session_id).participants_present == 1


@pytest.mark.django_db
def test_nobody_is_seeded_into_an_ended_meeting() -> None:
    session_id = sid()
    services.record_event(
        session_id=session_id,
        event=StatusChanged(session_id, "completed", "completed", None),
        broadcast=False,
    )
    assert services.seed_presence(session_id=session_id, names=["Alice"], broadcast=False) == []
    assert not Presence.objects.filter(session_id=session_id).exists()


@pytest.mark.django_db(transaction=True)
async def test_the_relay_seeds_people_already_in_a_meeting_it_starts_watching(
    simulator_server, fresh_channel_layer
) -> None:
    session_id = sid()
    control = simulator_server.control
    control.create_session(session_id=session_id, manual=True)
    for step in (
        {"status": "joining"},
        {"status": "recording"},
        {"join": "Zoë Müller"},
        {"join": "李雷"},
    ):
        control.emit(session_id, **step)
    relay = fast_relay(simulator_server.base_url, stall_seconds=2.0)
    await relay.start()
    try:
        await relay.watch(session_id)

        async def seeded() -> bool:
            return await _present(session_id) == ["Zoë Müller", "李雷"]

        await eventually(seeded, what="the two people already present")
        # A join the stream reports later is an ordinary join after the seeded ones.
        await eventually(
            lambda: asyncio.to_thread(
                lambda: control.stats()["open_streams"].get(session_id, 0) == 1
            ),
            what="the relay's upstream stream",
        )
        control.emit(session_id, join="Bob")

        async def three_present() -> bool:
            return len(await _present(session_id)) == 3

        await eventually(three_present, what="Bob's join")
    finally:
        await relay.stop()
    notes = await database_sync_to_async(
        lambda: list(
            SessionEvent.objects.filter(session_id=session_id, kind=EventKind.JOINED)
            .order_by("seq")
            .values_list("participant_name", "note")
        )
    )()
    assert notes == [
        ("Zoë Müller", services.SEEDED_PRESENCE_NOTE),
        ("李雷", services.SEEDED_PRESENCE_NOTE),
        ("Bob", ""),
    ]


@database_sync_to_async
def _present(session_id: str) -> list[str]:
    return sorted(
        Presence.objects.filter(session_id=session_id, left_at__isnull=True).values_list(
            "participant_name", flat=True
        )
    )
