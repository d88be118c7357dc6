from pathlib import Path

from django.contrib import admin
from django.http import FileResponse, HttpRequest
from django.urls import path
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_safe
from django.views.generic import RedirectView

import scheduler
from monitoring import health, metrics
from scheduler.dashboard import dashboard_view

FAVICON = Path(scheduler.__file__).parent / "static" / "scheduler" / "favicon.ico"


@require_safe
@cache_control(public=True, max_age=86400)
def favicon(request: HttpRequest) -> FileResponse:
    """``/favicon.ico``, which browsers ask for on every page whatever the page links to."""
    return FileResponse(FAVICON.open("rb"), content_type="image/x-icon")


urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("favicon.ico", favicon, name="favicon"),
    path("admin/dashboard/", admin.site.admin_view(dashboard_view), name="metronome-dashboard"),
    path("admin/", admin.site.urls),
    path("healthz", health.healthz, name="healthz"),
    path("metrics", metrics.metrics, name="metrics"),
]
