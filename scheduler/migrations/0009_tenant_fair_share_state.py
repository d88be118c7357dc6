# Per-tenant state of fair scheduling (scheduler/fairness.py): no model, only that module
# reads and writes it; idempotent, as migrate may re-run it. No foreign key to
# tenants_tenant, so that truncating tenants (test flushes) is not refused; a deleted
# tenant's row is never read again (ids are not reused). Undoing it keeps the table: its
# passes stay valid, and the code of any scheduler migration defers through them.

from django.db import migrations

CREATE = """
CREATE TABLE IF NOT EXISTS scheduler_tenantpass (
    tenant_id bigint PRIMARY KEY,
    pass bigint NOT NULL CHECK (pass >= 0),
    seq bigint NOT NULL CHECK (seq >= 0)
);
"""


class Migration(migrations.Migration):
    dependencies = [
        ("scheduler", "0008_auditentry_moved_to_audit"),
    ]

    operations = [migrations.RunSQL(CREATE, migrations.RunSQL.noop)]
