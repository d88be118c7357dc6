"""The audit trail outlives what it records, tenants included."""

from __future__ import annotations

import pytest

from audit.models import AuditEntry
from tenants.models import Locker, Tenant

pytestmark = pytest.mark.django_db


def test_deleting_a_tenant_in_admin_keeps_its_trail(admin_client, tenant, probe_task):
    task = probe_task()
    Locker.add("github_token", "ghp_secret_value_1234", tenant.id)
    tenant_id = tenant.pk
    before = AuditEntry.objects.filter(tenant_id=tenant_id).count()
    assert before > 0

    response = admin_client.post(f"/admin/tenants/tenant/{tenant_id}/delete/", {"post": "yes"})

    assert response.status_code == 302
    assert not Tenant.objects.filter(pk=tenant_id).exists()
    trail = AuditEntry.objects.filter(tenant_id=tenant_id)
    assert trail.count() > before  # the old entries stay, with their tenant id
    deleted = set(trail.filter(action="delete").values_list("model", "object_id"))
    assert {("tenant", str(tenant_id)), ("task", str(task.pk))} <= deleted
    assert not any("ghp_secret_value_1234" in str(e.changes) for e in trail)
    listed = admin_client.get("/admin/audit/auditentry/")  # rows whose tenant is gone
    assert listed.status_code == 200 and len(listed.context["cl"].result_list) >= trail.count()


def test_deleting_a_tenant_from_the_shell_keeps_its_trail(tenant):
    tenant_id = tenant.pk
    Tenant.objects.filter(pk=tenant_id).delete()
    assert AuditEntry.objects.filter(tenant_id=tenant_id, action="delete", model="tenant").exists()
