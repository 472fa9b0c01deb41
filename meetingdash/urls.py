from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from sessions_monitor.forms import AdminLoginForm, LoginForm

# Failed logins are throttled on both login pages. Password reset is not offered: no mail is
# configured; admins set passwords in the admin or with `manage.py changepassword`.
admin.site.login_form = AdminLoginForm

urlpatterns = [
    path("admin/", admin.site.urls),
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(authentication_form=LoginForm),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", include("sessions_monitor.urls")),
]
