from django.contrib import admin
from django.urls import path
from django.views.generic import RedirectView

from config import health
from scheduler.dashboard import dashboard_view

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/dashboard/", admin.site.admin_view(dashboard_view), name="metronome-dashboard"),
    path("admin/", admin.site.urls),
    path("healthz", health.healthz, name="healthz"),
    path("metrics", health.metrics, name="metrics"),
]
