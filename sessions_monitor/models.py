"""What MeetingDash stores: sessions, their events in our own order, presence, API tokens,
transcripts, the audit trail of what people did to bots, alert rules with their delivery
outbox, and who follows what.

`SessionEvent.seq` is the one key after storage: `id:` on our stream, the watermark a page
renders with, the resume point of every reconnect.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from sessions_monitor.upstream.events import TERMINAL_STATUSES


class StreamState(models.TextChoices):
    IDLE = "idle", "Not watched"
    CONNECTING = "connecting", "Connecting"
    LIVE = "live", "Live"
    RETRYING = "retrying", "Retrying"
    ENDED = "ended", "Ended"
    FAILED = "failed", "Failed"


class EventKind(models.TextChoices):
    STATUS = "status", "Status change"
    JOINED = "joined", "Participant joined"
    LEFT = "left", "Participant left"
    CLOSE = "close", "Stream closed"
    STREAM = "stream", "Stream note"
    ANOMALY = "anomaly", "Anomaly"
    GAP = "gap", "Gap (events may be missing)"


class MeetingSession(models.Model):
    session_id = models.CharField(primary_key=True, max_length=128)
    bot_name = models.CharField(max_length=200, blank=True, default="")
    meeting_link = models.CharField(max_length=2000, blank=True, default="")
    platform = models.CharField(max_length=40, blank=True, default="")
    status = models.CharField(max_length=40, blank=True, default="")
    previous_status = models.CharField(
        max_length=40, blank=True, default="", help_text="The status before this one, as we saw it."
    )
    status_since = models.DateTimeField(null=True, blank=True)
    error_code = models.CharField(max_length=100, blank=True, default="")
    error_message = models.TextField(blank=True, default="")
    failed_from_status = models.CharField(max_length=40, blank=True, default="")
    started_at = models.DateTimeField(
        null=True, blank=True, help_text="Upstream created_at, or the first event we saw."
    )
    first_seen_at = models.DateTimeField(default=timezone.now)
    last_event_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    stream_state = models.CharField(max_length=20, choices=StreamState, default=StreamState.IDLE)
    stream_state_since = models.DateTimeField(null=True, blank=True)
    stream_error = models.TextField(blank=True, default="")
    stream_error_code = models.CharField(
        max_length=100, blank=True, default="", help_text="Upstream error code of a failed link."
    )
    stream_retry_at = models.DateTimeField(null=True, blank=True)
    stream_alive_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Last time a relay said its upstream stream was live (every few seconds).",
    )
    relay_owner = models.CharField(
        max_length=64,
        blank=True,
        default="",
        help_text="The relay process that streams this session (scaled mode), with its claim.",
    )
    relay_claimed_until = models.DateTimeField(
        null=True,
        blank=True,
        help_text="The relay's claim lapses then unless renewed (it renews every few seconds).",
    )
    in_meeting_at = models.DateTimeField(
        null=True, blank=True, help_text="When the bot was first in the meeting (active)."
    )
    stuck_since = models.DateTimeField(
        null=True,
        blank=True,
        help_text="The status_since of the status the watchdog found it stuck in; "
        "cleared when it moves on.",
    )
    watched = models.BooleanField(default=False)
    last_seq = models.PositiveBigIntegerField(default=0)
    participants_present = models.PositiveIntegerField(default=0)
    peak_participants = models.PositiveIntegerField(default=0)
    raw = models.JSONField(default=dict, blank=True, help_text="Last upstream session object.")

    class Meta:
        ordering = ["-last_event_at"]
        permissions = [
            ("embed_session", "Can create and revoke status widget links"),
            ("control_session", "Can send bots into meetings and stop them"),
        ]
        indexes = [
            models.Index(fields=["-last_event_at"], name="session_recent_idx"),
            models.Index(fields=["status", "-last_event_at"], name="session_status_recent_idx"),
            models.Index(fields=["watched", "status"], name="session_watched_idx"),
            models.Index(fields=["platform"], name="session_platform_idx"),
            models.Index(fields=["error_code"], name="session_error_code_idx"),
            models.Index(fields=["started_at"], name="session_started_idx"),
            models.Index(fields=["bot_name"], name="session_bot_name_idx"),
            models.Index(fields=["started_at", "status", "platform"], name="session_insights_idx"),
            models.Index(fields=["status", "status_since"], name="session_dwell_idx"),
        ]

    def __str__(self) -> str:
        return self.session_id

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


class SessionEvent(models.Model):
    session = models.ForeignKey(MeetingSession, on_delete=models.CASCADE, related_name="events")
    seq = models.PositiveBigIntegerField()
    kind = models.CharField(max_length=20, choices=EventKind)
    status = models.CharField(max_length=40, blank=True, default="")
    previous_status = models.CharField(max_length=40, blank=True, default="")
    participant_name = models.CharField(max_length=300, blank=True, default="")
    error_code = models.CharField(max_length=100, blank=True, default="")
    error_message = models.TextField(blank=True, default="")
    upstream_timestamp = models.DateTimeField(null=True, blank=True)
    received_at = models.DateTimeField(default=timezone.now)
    raw = models.TextField(blank=True, default="", help_text="The upstream data, as received.")
    note = models.TextField(blank=True, default="", help_text="Stream notes and anomalies.")
    gap_started_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Gaps: since when no upstream stream was connected (empty: unknown); "
        "received_at is when one was again.",
    )

    class Meta:
        ordering = ["session", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["session", "seq"], name="event_unique_seq"),
        ]
        indexes = [
            models.Index(fields=["kind", "received_at"], name="event_kind_received_idx"),
            models.Index(fields=["received_at"], name="event_received_idx"),
            models.Index(fields=["participant_name"], name="event_participant_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.session_id}#{self.seq} {self.kind}"


class Presence(models.Model):
    """One interval of one participant in one session; a rejoin is a new row."""

    session = models.ForeignKey(MeetingSession, on_delete=models.CASCADE, related_name="presences")
    participant_name = models.CharField(max_length=300)
    joined_at = models.DateTimeField()
    left_at = models.DateTimeField(null=True, blank=True)
    join_seq = models.PositiveBigIntegerField()
    leave_seq = models.PositiveBigIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["session", "joined_at", "join_seq"]
        indexes = [
            models.Index(
                fields=["session", "participant_name", "left_at"], name="presence_open_idx"
            ),
            models.Index(fields=["participant_name"], name="presence_name_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.participant_name} in {self.session_id}"


class EmbedRevocation(models.Model):
    """Widget links issued up to `revoked_at` stop working: one session's, or (no session)
    every one. Kept as a record of who revoked what and when."""

    session = models.ForeignKey(
        MeetingSession,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="embed_revocations",
        help_text="Empty: every widget link of every session.",
    )
    revoked_at = models.DateTimeField(default=timezone.now)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True
    )

    class Meta:
        ordering = ["-revoked_at"]
        indexes = [models.Index(fields=["session", "revoked_at"], name="embed_revocation_idx")]

    def __str__(self) -> str:
        return f"widget links of {self.session_id or 'every session'} revoked"


class ApiToken(models.Model):
    """A token for programs reading our stream. Only a SHA-256 hash of it is stored."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100, blank=True, default="")
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    prefix = models.CharField(
        max_length=12, editable=False, help_text="First characters, for recognition."
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.name or 'unnamed'})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class ControlKind(models.TextChoices):
    SEND = "send", "Send a bot"
    STOP = "stop", "Stop a bot"


class ControlOutcomeKind(models.TextChoices):
    DONE = "done", "Done"
    NO_OP = "no-op", "Nothing to do"
    REFUSED = "refused", "Refused by the upstream"
    FAILED = "failed", "Upstream unreachable or failed"


class ControlAction(models.Model):
    """One control action on a bot: who, when, what was asked, and what the upstream
    answered. Written once when the answer is in, never edited (the admin shows it
    read-only); kept when its session or its user is deleted."""

    session = models.ForeignKey(
        MeetingSession,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="control_actions",
    )
    session_ref = models.CharField(
        max_length=128, blank=True, default="", help_text="The session id, kept if it is deleted."
    )
    action = models.CharField(max_length=20, choices=ControlKind)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True
    )
    actor_name = models.CharField(
        max_length=150, blank=True, default="", help_text="The username at the time."
    )
    via = models.CharField(max_length=20, blank=True, default="", help_text="page, api or admin")
    requested_at = models.DateTimeField(default=timezone.now)
    request = models.JSONField(
        default=dict, blank=True, help_text="What was asked (never a credential)."
    )
    outcome = models.CharField(max_length=20, choices=ControlOutcomeKind)
    upstream_status = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="The upstream's HTTP status; empty: no answer."
    )
    upstream_code = models.CharField(max_length=100, blank=True, default="")
    message = models.TextField(blank=True, default="", help_text="What people were told.")

    class Meta:
        ordering = ["-requested_at", "-id"]
        indexes = [
            models.Index(fields=["session", "-requested_at"], name="control_session_idx"),
            models.Index(fields=["-requested_at"], name="control_recent_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.get_action_display()} {self.session_ref} by {self.actor_name or '?'}"


class TranscriptSegment(models.Model):
    """One upstream transcript segment (`GET …/transcripts`), stored as the relay polls it."""

    session = models.ForeignKey(
        MeetingSession, on_delete=models.CASCADE, related_name="transcript_segments"
    )
    transcript_id = models.CharField(max_length=128)
    text = models.TextField(blank=True, default="")
    start_time = models.FloatField(help_text="Seconds from the session's start.")
    end_time = models.FloatField()
    speaker = models.CharField(max_length=300, blank=True, default="")
    confidence = models.FloatField(null=True, blank=True)
    language_code = models.CharField(max_length=20, blank=True, default="")
    created_at = models.DateTimeField(null=True, blank=True, help_text="Upstream created_at.")
    received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["session", "start_time", "transcript_id"]
        constraints = [
            models.UniqueConstraint(
                fields=["session", "transcript_id"], name="transcript_unique_segment"
            ),
        ]
        indexes = [
            models.Index(fields=["session", "start_time"], name="transcript_session_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.session_id} {self.transcript_id}"


class AlertTrigger(models.TextChoices):
    FAILED = "failed", "A session failed"
    STUCK = "stuck", "A session is stuck in one status"
    LOST = "lost", "The upstream no longer knows a session"
    UPSTREAM_DOWN = "upstream_down", "The upstream is unreachable"


class AlertChannel(models.TextChoices):
    WEBHOOK = "webhook", "Webhook (Standard Webhooks, JSON)"
    SLACK = "slack", "Slack-compatible incoming webhook"
    EMAIL = "email", "Email"


class AlertRule(models.Model):
    """When to tell whom. A session alert matches when every filter set here matches; the
    webhook secret is stored encrypted (`alerts.secrets`) and never shown again."""

    name = models.CharField(max_length=200, blank=True, default="")
    enabled = models.BooleanField(default=True)
    trigger = models.CharField(max_length=20, choices=AlertTrigger)
    status = models.CharField(
        max_length=40, blank=True, default="", help_text="Stuck: the status it is stuck in."
    )
    longer_than_seconds = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Stuck: for longer than this. Upstream down: for longer than this.",
    )
    error_code = models.CharField(
        max_length=100, blank=True, default="", help_text="Failed: only this error code."
    )
    platform = models.CharField(max_length=40, blank=True, default="")
    bot_name_pattern = models.CharField(
        max_length=200,
        blank=True,
        default="",
        help_text="Shell-style pattern, case-insensitive (e.g. Acme*).",
    )
    channel = models.CharField(max_length=20, choices=AlertChannel)
    target = models.CharField(max_length=2000, help_text="The webhook URL or the email address.")
    secret_encrypted = models.TextField(blank=True, default="", editable=False)
    secret_hint = models.CharField(
        max_length=16, blank=True, default="", editable=False, help_text="whsec_…last four."
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, editable=False
    )

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.name or f"{self.get_trigger_display()} → {self.get_channel_display()}"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    DELIVERED = "delivered", "Delivered"
    GAVE_UP = "gave_up", "Gave up"


class AlertDelivery(models.Model):
    """The outbox: one alert for one rule, written in the transaction of what triggers it,
    then sent (at least once, with retries) by a relay. `webhook_id` is the idempotency key,
    the same on every attempt; `dedup_key` makes one episode raise one alert per rule."""

    rule = models.ForeignKey(
        AlertRule, on_delete=models.SET_NULL, null=True, blank=True, related_name="deliveries"
    )
    rule_name = models.CharField(max_length=200, blank=True, default="")
    session = models.ForeignKey(
        MeetingSession,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="alert_deliveries",
    )
    session_ref = models.CharField(max_length=128, blank=True, default="")
    kind = models.CharField(max_length=40, help_text="session.failed, session.stuck, …")
    dedup_key = models.CharField(max_length=400, unique=True)
    webhook_id = models.CharField(max_length=64, unique=True)
    episode_at = models.DateTimeField(
        null=True, blank=True, help_text="Stuck: the status_since; upstream down: since when."
    )
    payload = models.JSONField(default=dict)
    is_test = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)
    status = models.CharField(max_length=20, choices=DeliveryStatus, default=DeliveryStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    claimed_by = models.CharField(max_length=64, blank=True, default="")
    claimed_until = models.DateTimeField(null=True, blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    response_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "alert deliveries"
        indexes = [
            models.Index(fields=["status", "next_attempt_at"], name="delivery_due_idx"),
            models.Index(fields=["session", "kind", "episode_at"], name="delivery_episode_idx"),
            models.Index(fields=["-created_at"], name="delivery_recent_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.session_ref} → {self.rule_name or 'deleted rule'}"


class Follow(models.Model):
    """A user follows one session, or every session of a bot name (case-insensitive)."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="follows"
    )
    session = models.ForeignKey(
        MeetingSession, on_delete=models.CASCADE, null=True, blank=True, related_name="followers"
    )
    bot_name = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "session"],
                condition=models.Q(session__isnull=False),
                name="follow_unique_session",
            ),
            models.UniqueConstraint(
                fields=["user", "bot_name"],
                condition=~models.Q(bot_name=""),
                name="follow_unique_bot",
            ),
            models.CheckConstraint(
                condition=(models.Q(session__isnull=False) & models.Q(bot_name=""))
                | (models.Q(session__isnull=True) & ~models.Q(bot_name="")),
                name="follow_session_or_bot",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} follows {self.session_id or self.bot_name}"
