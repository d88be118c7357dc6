from django.contrib import admin
from django.urls import path
from django.views.generic import RedirectView

from monitoring import health, metrics
from scheduler.dashboard import dashboard_view

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/dashboard/", admin.site.admin_view(dashboard_view), name="metronome-dashboard"),
    path("admin/", admin.site.urls),
    path("healthz", health.healthz, name="healthz"),
    path("metrics", metrics.metrics, name="metrics"),
]
