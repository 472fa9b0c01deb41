from __future__ import annotations

from django.urls import include, path

from sessions_monitor import control_views, embed_views, metrics, views

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("metrics", metrics.metrics_view, name="metrics"),
    path("v1/meeting-buddy/", include("sessions_monitor.api_urls")),
    path("", views.session_list, name="session-list"),
    path("sessions/watch", views.session_watch, name="session-watch"),
    path("sessions/new/", control_views.send_bot, name="session-send"),
    path("sessions/<str:session_id>/", views.session_detail, name="session-detail"),
    path("sessions/<str:session_id>/stop", control_views.stop_bot, name="session-stop"),
    path("embed/sessions/<str:session_id>/", embed_views.session_widget, name="embed-session"),
    path(
        "embed/sessions/<str:session_id>/snippet/",
        embed_views.session_snippet,
        name="embed-snippet",
    ),
]
