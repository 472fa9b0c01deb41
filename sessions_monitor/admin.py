"""Django admin for session history and API tokens.

Stored history is an audit record: nobody edits it here, and deleting needs the explicit
Django delete permission. Every list stays cheap at 100k sessions / 1M events: no per-row
queries, indexed filters and search, and no COUNT(*) over a big table on PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from asgiref.sync import async_to_sync
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import quote, unquote
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.http import urlencode

from sessions_monitor import control, embed, presentation, selectors, services, timeline, tokens
from sessions_monitor.csv_export import control_actions_csv_response, events_csv_response
from sessions_monitor.models import (
    ApiToken,
    ControlAction,
    ControlOutcomeKind,
    EmbedRevocation,
    MeetingSession,
    Presence,
    SessionEvent,
)

admin.site.site_header = "MeetingDash admin"
admin.site.site_title = "MeetingDash admin"
admin.site.index_title = "Session history and API tokens"
admin.site.site_url = "/"  # "View site" goes to the live dashboard

EMBED_PERMISSION = "sessions_monitor.embed_session"

# --- counting ------------------------------------------------------------------------------


# Django's Paginator and ModelAdmin are generic to the type checker only (django-stubs).
if TYPE_CHECKING:
    PaginatorBase = Paginator[Any]
    ModelAdminBase = admin.ModelAdmin[Any]
else:
    PaginatorBase = Paginator
    ModelAdminBase = admin.ModelAdmin


class EstimatedCountPaginator(PaginatorBase):
    """Exact counts, except an unfiltered list of a big PostgreSQL table.

    There the planner's row estimate (`pg_class.reltuples`, kept fresh by autovacuum) stands
    in for `SELECT COUNT(*)`, which reads the whole table on every page load. Filtered lists
    keep the exact count: their filters are indexed, and an estimate for a selective search
    can be off by orders of magnitude.
    """

    estimate_above: ClassVar[int] = 10_000

    @cached_property
    def count(self) -> int:
        estimate = selectors.table_row_estimate(self.object_list)
        if estimate is not None and estimate > self.estimate_above:
            return estimate
        return int(super().count)


# --- small formatting helpers --------------------------------------------------------------


def session_duration(session: MeetingSession) -> str:
    if session.started_at is None or (session.is_terminal and session.ended_at is None):
        return "—"
    seconds = presentation.session_duration(session.started_at, session.ended_at, timezone.now())
    return presentation.format_duration(seconds)


def presence_duration(presence: Presence) -> str:
    end = presence.left_at or timezone.now()
    return presentation.format_duration((end - presence.joined_at).total_seconds())


def admin_session_url(session_id: str) -> str:
    """The admin page of a session. Admin URLs carry primary keys quoted (`_` is its escape
    character: mbsess_AB is mbsess_5FAB), as the admin's own links do."""
    return reverse("admin:sessions_monitor_meetingsession_change", args=[quote(session_id)])


def dashboard_url(session_id: str) -> str:
    return reverse("session-detail", args=[session_id])


def events_changelist_url(session_id: str) -> str:
    url = reverse("admin:sessions_monitor_sessionevent_changelist")
    return f"{url}?{urlencode({'session__session_id__exact': session_id})}"


def presences_changelist_url(session_id: str) -> str:
    url = reverse("admin:sessions_monitor_presence_changelist")
    return f"{url}?{urlencode({'session__session_id__exact': session_id})}"


# --- the timeline (the dashboard's geometry, from a bounded read) ---------------------------


def session_timeline(
    session: MeetingSession, *, max_changes: int = 500, max_presences: int = 100
) -> timeline.TimelineGeometry | None:
    """The dashboard's SVG geometry from at most `max_changes` status events and
    `max_presences` presence intervals (two small indexed queries, whatever the size)."""
    changes = selectors.first_status_changes(session.session_id, max_changes)
    intervals = [
        timeline.Interval(row["participant_name"], row["joined_at"], row["left_at"])
        for row in selectors.first_presence_rows(session.session_id, max_presences)
    ]
    if not changes and not intervals:
        return None
    now = timezone.now()
    moments = [event.at for event in changes] + [interval.start for interval in intervals]
    start = min([session.started_at or now, *moments])
    end = session.ended_at or (max(moments) if session.is_terminal else now)
    return timeline.timeline_geometry(
        timeline.status_phases(changes, session.ended_at),
        intervals,
        start=start,
        end=max(end, start),
    )


# --- read-only history -----------------------------------------------------------------------


class HistoryAdmin(ModelAdminBase):
    """What happened is never added or edited here; delete needs the explicit permission."""

    paginator = EstimatedCountPaginator
    show_full_result_count = False
    # Facet counts are one COUNT per filter choice on every page load: off at this size.
    show_facets = admin.ShowFacets.NEVER

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class AuditAdmin(ModelAdminBase):
    """A record written by the code (an audit trail, a delivery log): never added, edited
    or deleted here, not even by a superuser."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


if TYPE_CHECKING:
    ControlActionInlineBase = admin.TabularInline[ControlAction, MeetingSession]
else:
    ControlActionInlineBase = admin.TabularInline


class ControlActionInline(ControlActionInlineBase):
    """The session's control actions (send, stop), read-only: the audit trail on its page.
    Shown to whoever may view the session; few rows per session, so a real inline is cheap."""

    model = ControlAction
    fk_name = "session"
    fields = (
        "requested_at",
        "action",
        "actor_name",
        "via",
        "outcome",
        "upstream_status",
        "message",
    )
    readonly_fields = fields
    ordering = ("-requested_at", "-id")
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = True
    verbose_name = "control action"
    verbose_name_plural = "Control actions (audit trail)"

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(
            request.user.has_perm("sessions_monitor.view_meetingsession")
            or request.user.has_perm("sessions_monitor.view_controlaction")
        )

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# The session page shows the first rows of its history inline, read-only, as plain tables:
# admin inline formsets cost ~4 ms of form rendering per row, which a long meeting's 200 rows
# turn into most of a second. The full lists are one link away, filtered to the session.
INLINE_EVENT_CAP = 100
INLINE_PRESENCE_CAP = 100


@dataclass(frozen=True)
class InlineEvent:
    pk: int
    seq: int
    kind: str
    status: str
    participant_name: str
    error_code: str
    at: dt.datetime | None
    received_at: dt.datetime
    note: str

    @property
    def url(self) -> str:
        return reverse("admin:sessions_monitor_sessionevent_change", args=[self.pk])


def inline_events(session: MeetingSession) -> list[InlineEvent]:
    return [
        InlineEvent(
            row["pk"],
            row["seq"],
            row["kind"],
            row["status"],
            row["participant_name"],
            row["error_code"],
            row["upstream_timestamp"],
            row["received_at"],
            row["note"],
        )
        for row in selectors.first_event_rows(session.session_id, INLINE_EVENT_CAP)
    ]


def inline_presences(session: MeetingSession) -> list[dict[str, Any]]:
    now = timezone.now()
    rows = selectors.first_presence_rows(session.session_id, INLINE_PRESENCE_CAP)
    return [
        {
            **row,
            "present_for": presentation.format_duration(
                ((row["left_at"] or now) - row["joined_at"]).total_seconds()
            ),
        }
        for row in rows
    ]


class LabelledValuesFilter(admin.AllValuesFieldListFilter):
    """The field's values as choices, the empty one named (an empty link names nothing)."""

    def choices(self, changelist: Any) -> Iterator[Any]:
        for choice in super().choices(changelist):
            if choice.get("display") == "":
                choice = {**choice, "display": "(none)"}
            yield choice


# --- sessions ----------------------------------------------------------------------------------


@admin.register(MeetingSession)
class MeetingSessionAdmin(HistoryAdmin):
    list_display = (
        "session_id",
        "bot_name",
        "platform",
        "status",
        "started_at",
        "ended_at",
        "duration",
        "peak_participants",
        "error_code",
    )
    list_filter = (
        ("status", LabelledValuesFilter),
        ("platform", LabelledValuesFilter),
        ("error_code", LabelledValuesFilter),
        "started_at",
        "watched",
        "stream_state",
    )
    search_fields = ("session_id",)  # shows the box; get_search_results decides the lookups
    search_help_text = (
        "The start of a session id (mbsess_…), of a meeting link (https://…), "
        "of a bot name, or of a participant's name."
    )
    date_hierarchy = "started_at"
    ordering = ("-started_at",)
    list_per_page = 50
    actions = (
        "watch_sessions",
        "unwatch_sessions",
        "export_events_csv",
        "export_control_actions_csv",
        "revoke_widget_links",
        "stop_bots",
    )
    inlines = (ControlActionInline,)
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "session_id",
                    "bot_name",
                    "platform",
                    "meeting_link",
                    "status",
                    "previous_status",
                    "status_since",
                    "error_code",
                    "error_message",
                    "failed_from_status",
                )
            },
        ),
        (
            "Timing",
            {"fields": ("started_at", "ended_at", "duration", "first_seen_at", "last_event_at")},
        ),
        ("Participants", {"fields": ("participants_present", "peak_participants")}),
        (
            "Relay",
            {
                "fields": (
                    "watched",
                    "stream_state",
                    "stream_state_since",
                    "stream_error",
                    "stream_retry_at",
                    "last_seq",
                )
            },
        ),
        ("Last upstream object", {"classes": ("collapse",), "fields": ("raw",)}),
    )
    readonly_fields = ("duration",)

    @admin.display(description="Duration")
    def duration(self, session: MeetingSession) -> str:
        return session_duration(session)

    view_on_site = False  # the page has its own "Live page" button (dashboard_url)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[MeetingSession], search_term: str
    ) -> tuple[QuerySet[MeetingSession], bool]:
        term = search_term.strip().strip('"').strip()
        if not term:
            return queryset, False
        return queryset.filter(selectors.admin_session_search(term)), False

    def get_changelist_instance(self, request: HttpRequest) -> Any:
        changelist = super().get_changelist_instance(request)
        if changelist.query:
            # The drill-down's two queries (date range, distinct years) would each repeat the
            # search; a broad prefix then costs twice what the results do. Hidden while searching.
            changelist.date_hierarchy = None
        return changelist

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        # Admin URLs carry the primary key quoted (mbsess_a -> mbsess_5Fa), as Django's
        # own change_view unquotes it before looking the object up.
        session = self.get_object(request, unquote(object_id))
        context = dict(extra_context or {})
        if session is not None and self.has_view_permission(request, session):
            context.update(self._session_page_context(request, session))
        return super().change_view(request, object_id, form_url, extra_context=context)

    def _session_page_context(
        self, request: HttpRequest, session: MeetingSession
    ) -> dict[str, Any]:
        event_count, presence_count = selectors.history_counts(session.session_id)
        return {
            "timeline": session_timeline(session),
            "dashboard_url": dashboard_url(session.session_id),
            "events_url": events_changelist_url(session.session_id),
            "presences_url": presences_changelist_url(session.session_id),
            "alert_deliveries_url": alerts_admin.session_deliveries_url(session.session_id),
            "event_count": event_count,
            "presence_count": presence_count,
            "events": inline_events(session),
            "presences": inline_presences(session),
            "event_cap": INLINE_EVENT_CAP,
            "presence_cap": INLINE_PRESENCE_CAP,
            "can_embed": request.user.has_perm(EMBED_PERMISSION),
            "snippet_url": reverse("embed-snippet", args=[session.session_id]),
            "embed_days": embed.default_days(),
        }

    # Actions. Watching changes what the relay does, not what happened: it needs the model's
    # change permission even though the form itself is read-only.
    def has_watch_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("sessions_monitor.change_meetingsession"))

    @admin.action(description="Watch selected sessions (live relay)", permissions=["watch"])
    def watch_sessions(self, request: HttpRequest, queryset: QuerySet[MeetingSession]) -> None:

        ids = list(queryset.values_list("session_id", flat=True))
        for session_id in ids:
            services.request_watch(session_id)
        self.message_user(request, f"Asked the relay to watch {len(ids)} session(s).")

    @admin.action(description="Stop watching selected sessions", permissions=["watch"])
    def unwatch_sessions(self, request: HttpRequest, queryset: QuerySet[MeetingSession]) -> None:

        ids = list(queryset.values_list("session_id", flat=True))
        for session_id in ids:
            services.request_unwatch(session_id)
        self.message_user(request, f"Asked the relay to stop watching {len(ids)} session(s).")

    def has_embed_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm(EMBED_PERMISSION))

    @admin.action(description="Revoke widget links of selected sessions", permissions=["embed"])
    def revoke_widget_links(self, request: HttpRequest, queryset: QuerySet[MeetingSession]) -> None:

        ids = list(queryset.values_list("session_id", flat=True))
        count = services.revoke_widget_links(session_ids=ids, user=request.user)
        self.message_user(
            request,
            f"Revoked the widget links of {count} session(s); open widgets close within "
            f"{int(settings.MEETINGDASH_KEEPALIVE_SECONDS)} s.",
            messages.SUCCESS,
        )

    def get_urls(self) -> list[Any]:
        return [
            path(
                "revoke-all-widget-links/",
                self.admin_site.admin_view(self.revoke_all_widget_links_view),
                name="sessions_monitor_revoke_all_widget_links",
            ),
            *super().get_urls(),
        ]

    def revoke_all_widget_links_view(self, request: HttpRequest) -> HttpResponse:
        """A confirmation page (GET), then every widget link of every session revoked (POST)."""

        if not self.has_embed_permission(request):
            raise PermissionDenied
        if request.method == "POST":
            services.revoke_widget_links(session_ids=None, user=request.user)
            self.message_user(request, "Revoked every widget link.", messages.SUCCESS)
            return redirect("admin:sessions_monitor_meetingsession_changelist")
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Revoke every widget link?",
        }
        return TemplateResponse(
            request, "admin/sessions_monitor/meetingsession/revoke_all_widget_links.html", context
        )

    @admin.action(description="Export events of selected sessions (CSV)", permissions=["view"])
    def export_events_csv(
        self, request: HttpRequest, queryset: QuerySet[MeetingSession]
    ) -> StreamingHttpResponse:
        return events_csv_response(request, list(queryset.values_list("session_id", flat=True)))

    @admin.action(
        description="Export control actions of selected sessions (CSV)", permissions=["view"]
    )
    def export_control_actions_csv(
        self, request: HttpRequest, queryset: QuerySet[MeetingSession]
    ) -> StreamingHttpResponse:
        ids = list(queryset.values_list("session_id", flat=True))
        return control_actions_csv_response(request, ids)

    # Stopping bots: an intermediate confirmation page, like delete_selected; the POST back
    # from it (post=yes) asks the upstream, one audit row per session ("via admin").
    def has_control_permission(self, request: HttpRequest) -> bool:
        return control.can_control(request.user)

    @admin.action(description="Stop the selected bots", permissions=["control"])
    def stop_bots(
        self, request: HttpRequest, queryset: QuerySet[MeetingSession]
    ) -> HttpResponse | None:
        sessions = list(queryset.order_by("session_id")[: MAX_BULK_STOP + 1])
        if len(sessions) > MAX_BULK_STOP:
            self.message_user(
                request, f"Select at most {MAX_BULK_STOP} bots at a time.", messages.WARNING
            )
            return None
        if request.POST.get("post") != "yes":
            return self._stop_confirmation(request, sessions)
        actor = request.user
        assert isinstance(actor, AbstractBaseUser)  # the admin lets only staff users in
        results = async_to_sync(control.astop_bots)(
            actor=actor, via="admin", session_ids=[s.session_id for s in sessions]
        )
        self._report_stops(request, results)
        return None

    def _stop_confirmation(
        self, request: HttpRequest, sessions: list[MeetingSession]
    ) -> TemplateResponse:
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Stop these bots?",
            "sessions": sessions,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, STOP_CONFIRMATION_TEMPLATE, context)

    def _report_stops(self, request: HttpRequest, results: list[control.ControlResult]) -> None:
        done = sum(r.outcome == ControlOutcomeKind.DONE for r in results)
        no_op = sum(r.outcome == ControlOutcomeKind.NO_OP for r in results)
        if done or no_op:
            summary = f"Stop requested for {done} bot(s)."
            if no_op:
                summary += f" {no_op} had already stopped."
            self.message_user(request, summary, messages.SUCCESS)
        for result in results:
            if not result.ok:
                self.message_user(
                    request, f"Not stopped: {result.session_id}. {result.message}", messages.ERROR
                )


STOP_CONFIRMATION_TEMPLATE = "admin/sessions_monitor/meetingsession/stop_selected_confirmation.html"


# --- events and presence -------------------------------------------------------------------


class ExactSessionOrNamePrefixSearch(ModelAdminBase):
    """Search by exact session id or the start of a participant name: both indexed."""

    search_fields = ("participant_name",)  # shows the box; the lookups are below

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        term = search_term.strip().strip('"')
        if not term:
            return queryset, False
        return queryset.filter(Q(session_id=term) | Q(participant_name__istartswith=term)), False


@admin.display(description="Session", ordering="session_id")
def _session_link_column(model_admin: admin.ModelAdmin[Any], row: SessionEvent | Presence) -> str:
    url = admin_session_url(row.session_id)
    return format_html('<a href="{}">{}</a>', url, row.session_id)


@admin.register(SessionEvent)
class SessionEventAdmin(ExactSessionOrNamePrefixSearch, HistoryAdmin):
    list_display = (
        "session_link",
        "seq",
        "kind",
        "status",
        "participant_name",
        "error_code",
        "upstream_timestamp",
        "received_at",
    )
    list_display_links = ("seq",)
    list_filter = ("kind", "received_at")
    search_help_text = "Exact session id, or the start of a participant's name."
    date_hierarchy = None
    ordering = ("-received_at",)
    list_per_page = 50

    def get_ordering(self, request: HttpRequest) -> tuple[str, ...]:
        # One session's events read in their own order, straight off the (session, seq) index;
        # "-received_at" there would walk the whole event index backwards to find them.
        if "session__session_id__exact" in request.GET:
            return ("session_id", "seq")
        return ("-received_at",)

    readonly_fields = ("session_link",)
    fields = ("session_link", *selectors.EVENT_FIELDS)

    session_link = _session_link_column


class UnsetFieldFilter(admin.SimpleListFilter):
    """Two choices: `field` not set yet (an open state) or set."""

    field: str
    unset_choice: tuple[str, str]
    set_choice: tuple[str, str]

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [self.unset_choice, self.set_choice]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() in (self.unset_choice[0], self.set_choice[0]):
            unset = self.value() == self.unset_choice[0]
            return queryset.filter(**{f"{self.field}__isnull": unset})
        return queryset


class OpenPresenceFilter(UnsetFieldFilter):
    title = "present now"
    parameter_name = "open"
    field = "left_at"
    unset_choice = ("yes", "Still present")
    set_choice = ("no", "Left")


@admin.register(Presence)
class PresenceAdmin(ExactSessionOrNamePrefixSearch, HistoryAdmin):
    list_display = ("participant_name", "session_link", "joined_at", "left_at", "present_for")
    list_filter = (OpenPresenceFilter, "joined_at")
    search_help_text = "Exact session id, or the start of a participant's name."
    ordering = ("-joined_at",)
    list_per_page = 50
    readonly_fields = ("session_link", "present_for")
    fields = (
        "session_link",
        "participant_name",
        "joined_at",
        "left_at",
        "present_for",
        "join_seq",
        "leave_seq",
    )

    session_link = _session_link_column

    @admin.display(description="Present for")
    def present_for(self, presence: Presence) -> str:
        return presence_duration(presence)


# --- widget link revocations ------------------------------------------------------------------


@admin.register(EmbedRevocation)
class EmbedRevocationAdmin(HistoryAdmin):
    """Who revoked which widget links, when (written by the revoke actions, never here)."""

    list_display = ("revoked_at", "scope", "revoked_by")
    list_filter = ("revoked_at",)
    list_select_related = ("revoked_by",)
    ordering = ("-revoked_at",)
    fields = ("scope", "revoked_at", "revoked_by")
    readonly_fields = ("scope",)

    @admin.display(description="Widget links of")
    def scope(self, revocation: EmbedRevocation) -> str:
        return revocation.session_id or "every session"


# --- control actions -----------------------------------------------------------------------

MAX_BULK_STOP = 100


@admin.register(ControlAction)
class ControlActionAdmin(AuditAdmin):
    """Who sent or stopped which bot, when, and what the upstream said: written by
    control.py, never added, edited or deleted here."""

    list_display = (
        "requested_at",
        "action",
        "session_column",
        "actor_name",
        "via",
        "outcome",
        "upstream_status",
        "message",
    )
    list_filter = ("action", "outcome", "via", "requested_at")
    search_fields = ("=session_ref", "actor_name")
    search_help_text = "An exact session id (mbsess_…), or the start of a username."
    ordering = ("-requested_at", "-id")
    date_hierarchy = "requested_at"
    list_per_page = 100
    paginator = EstimatedCountPaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    fields = (
        "requested_at",
        "action",
        "session_column",
        "actor",
        "actor_name",
        "via",
        "request",
        "outcome",
        "upstream_status",
        "upstream_code",
        "message",
    )
    readonly_fields = fields

    @admin.display(description="Session", ordering="session_ref")
    def session_column(self, row: ControlAction) -> str:
        if row.session_id is None:
            return row.session_ref
        return format_html(
            '<a href="{}">{}</a>', admin_session_url(row.session_id), row.session_ref
        )


# --- API tokens ------------------------------------------------------------------------------


class TokenStateFilter(UnsetFieldFilter):
    title = "state"
    parameter_name = "state"
    field = "revoked_at"
    unset_choice = ("active", "Active")
    set_choice = ("revoked", "Revoked")


@admin.register(ApiToken)
class ApiTokenAdmin(ModelAdminBase):
    list_display = ("prefix", "name", "user", "created_at", "last_used_at", "revoked_at", "active")
    list_filter = (TokenStateFilter, "created_at", "last_used_at")
    search_fields = ("name", "prefix", "user__username")
    list_select_related = ("user",)
    autocomplete_fields = ()
    raw_id_fields = ("user",)
    actions = ("revoke_tokens",)
    ordering = ("-created_at",)

    def get_fields(self, request: HttpRequest, obj: ApiToken | None = None) -> tuple[str, ...]:
        if obj is None:
            return ("user", "name")
        return ("prefix", "name", "user", "created_at", "last_used_at", "revoked_at")

    def get_readonly_fields(self, request: HttpRequest, obj: ApiToken | None = None) -> list[str]:
        if obj is None:
            return []
        return ["prefix", "user", "created_at", "last_used_at", "revoked_at"]

    @admin.display(description="Active", boolean=True)
    def active(self, token: ApiToken) -> bool:
        return token.is_active

    def save_model(self, request: HttpRequest, obj: ApiToken, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return

        created, raw = tokens.create_token(user=obj.user, name=obj.name)
        # The admin's response_add expects `obj` to be the saved row.
        obj.pk = created.pk
        obj.__dict__.update(
            {
                field.attname: getattr(created, field.attname)
                for field in ApiToken._meta.concrete_fields
            }
        )
        obj._state.adding = False
        request._created_api_token = raw  # type: ignore[attr-defined]

    def response_add(
        self, request: HttpRequest, obj: ApiToken, post_url_continue: str | None = None
    ) -> HttpResponse:
        raw = getattr(request, "_created_api_token", None)
        if raw is None:
            return super().response_add(request, obj, post_url_continue)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "API token created",
            "token": obj,
            "raw_token": raw,
            "changelist_url": reverse("admin:sessions_monitor_apitoken_changelist"),
        }
        response = TemplateResponse(
            request, "admin/sessions_monitor/apitoken/created.html", context
        )
        response["Cache-Control"] = "no-store"
        return response

    @admin.action(description="Revoke selected tokens", permissions=["change"])
    def revoke_tokens(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:

        revoked = 0
        for token in queryset.filter(revoked_at__isnull=True):
            tokens.revoke(token)
            revoked += 1
        self.message_user(request, f"Revoked {revoked} token(s).", messages.SUCCESS)


__all__ = [
    "ApiTokenAdmin",
    "ControlActionAdmin",
    "EstimatedCountPaginator",
    "MeetingSessionAdmin",
    "PresenceAdmin",
    "SessionEventAdmin",
    "session_timeline",
]

from sessions_monitor.alerts import admin as alerts_admin  # noqa: E402 (registers them)
