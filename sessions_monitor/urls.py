from __future__ import annotations

from django.urls import path

from sessions_monitor import views

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("", views.session_list, name="session-list"),
]
