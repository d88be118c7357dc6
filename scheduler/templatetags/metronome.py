from typing import Any

from django import template
from django.utils.safestring import SafeString

from scheduler.badges import status_badge as render_status_badge

register = template.Library()


@register.simple_tag
def status_badge(status: str | None) -> SafeString:
    """``{% status_badge run.status %}``: the status badge of :mod:`scheduler.badges`."""
    return render_status_badge(status)


@register.filter
def get_item(mapping: dict, key: Any) -> Any:
    return mapping.get(key)


@register.inclusion_tag("admin/scheduler/tenant_load_table.html")
def tenant_load_table(tenant: Any) -> dict[str, Any]:
    """The load card of one tenant's admin page (the page already checked access)."""
    from django.utils import timezone

    from scheduler.dashboard import tenant_load_rows

    return {"rows": tenant_load_rows([tenant.pk], timezone.now()), "link_tenants": False}
