from __future__ import annotations

import hashlib
import io
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.utils import timezone

from sessions_monitor.models import ApiToken
from sessions_monitor.tokens import authenticate, create_token, revoke

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice() -> User:
    return User.objects.create_user("alice")


def test_it_stores_only_a_hash_of_the_token(alice) -> None:
    token, plain = create_token(user=alice, name="ci")

    stored = ApiToken.objects.get(pk=token.pk)
    assert stored.token_hash == hashlib.sha256(plain.encode()).hexdigest()
    assert plain not in {stored.token_hash, stored.prefix, stored.name}
    assert plain.startswith(stored.prefix)
    assert len(plain) > 40


def test_it_authenticates_an_active_token_and_no_other(alice) -> None:
    token, plain = create_token(user=alice)

    owner = authenticate(plain)
    assert owner is not None and (owner.username, owner.token_id) == ("alice", token.pk)
    assert authenticate(plain + "x") is None
    assert authenticate("") is None
    revoke(token)
    assert authenticate(plain) is None


def test_an_inactive_user_cannot_use_a_token(alice) -> None:
    _, plain = create_token(user=alice)
    alice.is_active = False
    alice.save()
    assert authenticate(plain) is None


def test_last_used_is_written_at_most_once_a_minute(alice) -> None:
    token, plain = create_token(user=alice)
    authenticate(plain)
    first = ApiToken.objects.get(pk=token.pk).last_used_at
    assert first is not None
    authenticate(plain)
    assert ApiToken.objects.get(pk=token.pk).last_used_at == first

    ApiToken.objects.filter(pk=token.pk).update(last_used_at=first - timedelta(minutes=2))
    authenticate(plain)
    renewed = ApiToken.objects.get(pk=token.pk).last_used_at
    assert renewed is not None
    assert first - timedelta(seconds=1) < renewed <= timezone.now()


def test_create_api_token_prints_the_token_as_the_last_word(alice) -> None:
    out = io.StringIO()
    call_command("create_api_token", "alice", "--name", "reporting", stdout=out)

    plain = out.getvalue().strip().splitlines()[-1].split()[-1]
    owner = authenticate(plain)
    assert owner is not None and owner.username == "alice"
    assert ApiToken.objects.get().name == "reporting"


def test_create_api_token_rejects_an_unknown_user() -> None:
    with pytest.raises(CommandError):
        call_command("create_api_token", "nobody", stdout=io.StringIO())


def test_watch_session_marks_the_session_watched() -> None:
    from sessions_monitor.models import MeetingSession

    out = io.StringIO()
    call_command("watch_session", "mbsess_cmd1", stdout=out)
    assert MeetingSession.objects.get(pk="mbsess_cmd1").watched is True
    with pytest.raises(CommandError):
        call_command("watch_session", "nope", stdout=io.StringIO())
