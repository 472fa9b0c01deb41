from __future__ import annotations

from django.urls import path

from sessions_monitor import views

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("", views.session_list, name="session-list"),
    path("sessions/watch", views.session_watch, name="session-watch"),
    path("sessions/<str:session_id>/", views.session_detail, name="session-detail"),
]
