"""The admin of alerts: rules (managed here), the delivery log (read-only), follows.

A rule's signing secret is shown once, in the message after the save that made it, and
never rendered again (the form's secret field is write-only). Webhook URLs may carry a token
in their path (Slack's do): lists show only their scheme and host.
"""

from __future__ import annotations

import copy
import json
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import Count, OuterRef, Q, QuerySet, Subquery
from django.forms.models import construct_instance
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.http import urlencode

from sessions_monitor.admin import (
    AuditAdmin,
    EstimatedCountPaginator,
    ModelAdminBase,
    admin_session_url,
    dashboard_url,
)
from sessions_monitor.alerts import outbox, rules, secrets
from sessions_monitor.models import (
    AlertDelivery,
    AlertRule,
    DeliveryStatus,
    Follow,
)

RETRYABLE = (DeliveryStatus.GAVE_UP, DeliveryStatus.PENDING)


def deliveries_changelist_url(**params: str) -> str:
    url = reverse("admin:sessions_monitor_alertdelivery_changelist")
    return f"{url}?{urlencode(params)}" if params else url


def session_deliveries_url(session_id: str) -> str:
    """The delivery log filtered to one session (linked from the session's admin page)."""
    return deliveries_changelist_url(session__session_id__exact=session_id)


def delivery_change_url(delivery: AlertDelivery) -> str:
    return reverse("admin:sessions_monitor_alertdelivery_change", args=[delivery.pk])


def secrets_page(
    model_admin: admin.ModelAdmin[AlertRule],
    request: HttpRequest,
    made: list[tuple[AlertRule, str]],
) -> TemplateResponse:
    """The one page that shows signing secrets, once (like a new API token): never in a
    message (the messages cookie would carry it), never cached."""
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.opts,
        "title": "Signing secret" + ("s" if len(made) > 1 else ""),
        "made": [(rule, secret, secrets.hint(secret)) for rule, secret in made],
        "changelist_url": reverse("admin:sessions_monitor_alertrule_changelist"),
    }
    response = TemplateResponse(request, "admin/sessions_monitor/alertrule/secrets.html", context)
    response["Cache-Control"] = "no-store"
    return response


# --- rules -----------------------------------------------------------------------------------


if TYPE_CHECKING:
    RuleFormBase = forms.ModelForm[AlertRule]
else:
    RuleFormBase = forms.ModelForm


class AlertRuleForm(RuleFormBase):
    secret = forms.CharField(
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Webhook and Slack only, optional: paste a whsec_… secret to sign with. "
        "Left empty, a new rule gets a new secret (shown once after saving) and an existing "
        "one keeps its own.",
    )

    class Meta:
        model = AlertRule
        fields = (
            "name",
            "enabled",
            "trigger",
            "status",
            "longer_than_seconds",
            "error_code",
            "platform",
            "bot_name_pattern",
            "channel",
            "target",
        )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if self.errors:
            return cleaned
        candidate = construct_instance(self, copy.copy(self.instance))
        try:
            rules.validate_rule(candidate)
        except ValidationError as exc:
            self.add_error(None, exc)
        secret = cleaned.get("secret", "")
        if secret:
            if candidate.channel not in rules.SIGNED_CHANNELS:
                self.add_error("secret", "Only webhook and Slack rules are signed.")
            elif not secrets.is_valid(secret):
                self.add_error("secret", "A secret looks like whsec_ and a base64 key.")
        return cleaned


@admin.register(AlertRule)
class AlertRuleAdmin(ModelAdminBase):
    form = AlertRuleForm
    list_display = (
        "__str__",
        "enabled",
        "trigger",
        "filters",
        "channel",
        "target_column",
        "secret_hint",
        "deliveries_last_day",
        "last_delivery_status",
    )
    list_filter = ("enabled", "trigger", "channel")
    search_fields = ("name",)
    actions = ("send_test", "new_secret", "enable_rules", "disable_rules")
    readonly_fields = ("secret_hint", "created_at", "created_by")
    fieldsets = (
        (None, {"fields": ("name", "enabled", "trigger")}),
        (
            "Which sessions",
            {
                "fields": (
                    "status",
                    "longer_than_seconds",
                    "error_code",
                    "platform",
                    "bot_name_pattern",
                )
            },
        ),
        ("Where to", {"fields": ("channel", "target", "secret", "secret_hint")}),
        ("Record", {"fields": ("created_at", "created_by")}),
    )

    def get_fieldsets(self, request: HttpRequest, obj: AlertRule | None = None) -> Any:
        if obj is not None:
            return self.fieldsets
        # A new rule has no hint or record yet.
        return [
            (name, {"fields": [f for f in options["fields"] if f not in self.readonly_fields]})
            for name, options in self.fieldsets
            if name != "Record"
        ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[AlertRule]:
        since = timezone.now() - timedelta(days=1)
        last = AlertDelivery.objects.filter(rule=OuterRef("pk")).order_by("-created_at", "-id")
        queryset: QuerySet[AlertRule] = super().get_queryset(request)
        return queryset.annotate(
            recent_count=Count("deliveries", filter=Q(deliveries__created_at__gte=since)),
            last_status=Subquery(last.values("status")[:1]),
        )

    @admin.display(description="Filters")
    def filters(self, rule: AlertRule) -> str:
        return rules.filters_in_words(rule)

    @admin.display(description="Target")
    def target_column(self, rule: AlertRule) -> str:
        return rules.safe_target(rule)

    @admin.display(description="Deliveries (24 h)", ordering="recent_count")
    def deliveries_last_day(self, rule: AlertRule) -> str:
        count: int = getattr(rule, "recent_count", 0)
        url = deliveries_changelist_url(rule__id__exact=str(rule.pk))
        return format_html('<a href="{}">{}</a>', url, count)

    @admin.display(description="Last delivery")
    def last_delivery_status(self, rule: AlertRule) -> str:
        status = getattr(rule, "last_status", None)
        return DeliveryStatus(status).label if status else "—"

    def save_model(self, request: HttpRequest, obj: AlertRule, form: Any, change: bool) -> None:
        pasted = form.cleaned_data.get("secret") or None
        made: str | None = None
        if not change:
            obj.created_by = request.user  # type: ignore[assignment]
        if obj.channel in rules.SIGNED_CHANNELS:
            if pasted or not obj.secret_encrypted:
                secret = rules.set_secret(obj, pasted)
                made = None if pasted else secret
        else:
            obj.secret_encrypted = ""
            obj.secret_hint = ""
        super().save_model(request, obj, form, change)
        if made:
            request._alert_secret = made  # type: ignore[attr-defined]

    def response_add(
        self, request: HttpRequest, obj: AlertRule, post_url_continue: str | None = None
    ) -> HttpResponse:
        made = getattr(request, "_alert_secret", None)
        if made is None:
            return super().response_add(request, obj, post_url_continue)
        return secrets_page(self, request, [(obj, made)])

    def response_change(self, request: HttpRequest, obj: AlertRule) -> HttpResponse:
        made = getattr(request, "_alert_secret", None)
        if made is None:
            return super().response_change(request, obj)
        return secrets_page(self, request, [(obj, made)])

    @admin.action(description="Send a test alert", permissions=["change"])
    def send_test(self, request: HttpRequest, queryset: QuerySet[AlertRule]) -> None:
        for rule in queryset:
            delivery = outbox.enqueue_test(rule)
            self.message_user(
                request,
                format_html(
                    'Test alert for “{}” queued: <a href="{}">its delivery</a> shows when '
                    "it is sent and what the receiver answered.",
                    rule,
                    delivery_change_url(delivery),
                ),
                messages.SUCCESS,
            )

    @admin.action(description="Make a new signing secret", permissions=["change"])
    def new_secret(
        self, request: HttpRequest, queryset: QuerySet[AlertRule]
    ) -> TemplateResponse | None:
        made: list[tuple[AlertRule, str]] = []
        for rule in queryset:
            if rule.channel not in rules.SIGNED_CHANNELS:
                self.message_user(
                    request, f"“{rule}” sends email: it has no signing secret.", messages.WARNING
                )
                continue
            secret = rules.set_secret(rule)
            rule.save(update_fields=["secret_encrypted", "secret_hint"])
            made.append((rule, secret))
        return secrets_page(self, request, made) if made else None

    @admin.action(description="Enable the selected rules", permissions=["change"])
    def enable_rules(self, request: HttpRequest, queryset: QuerySet[AlertRule]) -> None:
        count = queryset.update(enabled=True)
        self.message_user(request, f"Enabled {count} rule(s).", messages.SUCCESS)

    @admin.action(description="Disable the selected rules", permissions=["change"])
    def disable_rules(self, request: HttpRequest, queryset: QuerySet[AlertRule]) -> None:
        count = queryset.update(enabled=False)
        self.message_user(request, f"Disabled {count} rule(s).", messages.SUCCESS)


# --- the delivery log ----------------------------------------------------------------------


class KindFilter(admin.SimpleListFilter):
    """The kinds the outbox writes, without a DISTINCT over the whole log."""

    title = "kind"
    parameter_name = "kind"
    kinds = (
        outbox.FAILED,
        outbox.STUCK,
        outbox.RESOLVED,
        outbox.LOST,
        outbox.UPSTREAM_DOWN,
        outbox.UPSTREAM_RESOLVED,
        outbox.TEST,
    )

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(kind, kind) for kind in self.kinds]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset.filter(kind=self.value()) if self.value() else queryset


@admin.register(AlertDelivery)
class AlertDeliveryAdmin(AuditAdmin):
    """What was sent to whom, and what came back: written by the outbox and the sender, never
    edited here. "Retry now" needs the change permission although no field is editable."""

    list_display = (
        "created_at",
        "status",
        "kind",
        "is_test",
        "rule_column",
        "session_column",
        "attempts",
        "response_code",
        "error_column",
        "last_attempt_at",
        "delivered_at",
        "webhook_id",
    )
    list_display_links = ("created_at",)
    list_filter = ("status", KindFilter, "is_test")
    search_fields = ("webhook_id",)  # shows the box; get_search_results decides the lookups
    search_help_text = "An exact session id (mbsess_…) or webhook id (msg_…)."
    ordering = ("-created_at", "-id")
    list_per_page = 100
    paginator = EstimatedCountPaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    actions = ("retry_now",)
    fields = (
        "status",
        "kind",
        "is_test",
        "rule_column",
        "session_column",
        "attempts",
        "response_code",
        "last_error",
        "created_at",
        "last_attempt_at",
        "next_attempt_at",
        "delivered_at",
        "webhook_id",
        "episode_at",
        "payload_pretty",
    )
    readonly_fields = fields

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[AlertDelivery], search_term: str
    ) -> tuple[QuerySet[AlertDelivery], bool]:
        term = search_term.strip().strip('"').strip()
        if not term:
            return queryset, False
        return queryset.filter(Q(session_id=term) | Q(webhook_id=term)), False

    @admin.display(description="Rule", ordering="rule_name")
    def rule_column(self, row: AlertDelivery) -> str:
        if row.rule_id is None:
            return f"{row.rule_name or '—'} (deleted)"
        url = reverse("admin:sessions_monitor_alertrule_change", args=[row.rule_id])
        return format_html('<a href="{}">{}</a>', url, row.rule_name or row.rule_id)

    @admin.display(description="Session", ordering="session_ref")
    def session_column(self, row: AlertDelivery) -> str:
        if row.session_id is None:
            return row.session_ref or "—"
        return format_html(
            '<a href="{}">{}</a> (<a href="{}">live page</a>)',
            admin_session_url(row.session_id),
            row.session_ref or row.session_id,
            dashboard_url(row.session_id),
        )

    @admin.display(description="Last error")
    def error_column(self, row: AlertDelivery) -> str:
        error = row.last_error
        return error if len(error) <= 80 else error[:79] + "…"

    @admin.display(description="Payload")
    def payload_pretty(self, row: AlertDelivery) -> str:
        text = json.dumps(row.payload, indent=2, ensure_ascii=False, sort_keys=True)
        return format_html("<pre>{}</pre>", text)

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("sessions_monitor.change_alertdelivery"))

    @admin.action(description="Retry now", permissions=["retry"])
    def retry_now(self, request: HttpRequest, queryset: QuerySet[AlertDelivery]) -> None:
        now = timezone.now()
        count = queryset.filter(status__in=RETRYABLE).update(
            status=DeliveryStatus.PENDING, next_attempt_at=now
        )
        skipped = queryset.count() - count
        summary = (
            f"{count} deliver{'y' if count == 1 else 'ies'} will be sent again within seconds."
        )
        if skipped:
            summary += f" {skipped} already delivered, left as they are."
        self.message_user(request, summary, messages.SUCCESS)


# --- follows -----------------------------------------------------------------------------------


@admin.register(Follow)
class FollowAdmin(AuditAdmin):
    """Who follows what (set from the dashboard's pages, not here)."""

    list_display = ("user", "followed", "created_at")
    list_select_related = ("user",)
    search_fields = ("user__username", "bot_name")
    ordering = ("-created_at",)
    fields = ("user", "followed", "created_at")
    readonly_fields = fields

    @admin.display(description="Follows")
    def followed(self, follow: Follow) -> str:
        if follow.session_id is None:
            return f"every session of the bot {follow.bot_name!r}"
        return format_html(
            '<a href="{}">{}</a>', admin_session_url(follow.session_id), follow.session_id
        )


__all__ = [
    "AlertDeliveryAdmin",
    "AlertRuleAdmin",
    "FollowAdmin",
    "session_deliveries_url",
]
