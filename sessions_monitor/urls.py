from __future__ import annotations

from django.conf import settings
from django.urls import include, path

from sessions_monitor import (
    control_views,
    embed_views,
    follow_views,
    insights_views,
    list_views,
    metrics,
    views,
)
from sessions_monitor.alerts import views as alert_views

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("metrics", metrics.metrics_view, name="metrics"),
    path("v1/meeting-buddy/", include("sessions_monitor.api_urls")),
    path("", views.session_list, name="session-list"),
    path("sessions/watch", views.session_watch, name="session-watch"),
    path("sessions/export.csv", list_views.session_export, name="session-export"),
    path("sessions/new/", control_views.send_bot, name="session-send"),
    path("insights/", insights_views.insights, name="insights"),
    path("alerts/", alert_views.alerts_overview, name="alerts"),
    path("sessions/<str:session_id>/", views.session_detail, name="session-detail"),
    path("sessions/<str:session_id>/stop", control_views.stop_bot, name="session-stop"),
    path("sessions/<str:session_id>/follow", follow_views.session_follow, name="session-follow"),
    path("follows/", follow_views.following, name="follows"),
    path("follows/bot", follow_views.bot_follow, name="follow-bot"),
    path("embed/sessions/<str:session_id>/", embed_views.session_widget, name="embed-session"),
    path(
        "embed/sessions/<str:session_id>/snippet/",
        embed_views.session_snippet,
        name="embed-snippet",
    ),
]

if settings.MEETINGDASH_DEMO_ALERTS:
    from sessions_monitor.alerts import demo

    urlpatterns += [
        path(demo.RECEIVE_PATH.lstrip("/"), demo.receive, name="demo-alerts-receive"),
        path(demo.PAGE_PATH.lstrip("/"), demo.page, name="demo-alerts"),
    ]
