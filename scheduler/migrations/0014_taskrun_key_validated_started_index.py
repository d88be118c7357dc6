"""Aligns and validates TaskRun's (tenant, task) key over the existing runs, and makes the
index of runs by start time hold only started runs; outside a transaction, so that on a
large TaskRun table neither the scans nor the index build block the scheduler's writes."""

from django.contrib.postgres.operations import AddIndexConcurrently, RemoveIndexConcurrently
from django.db import migrations, models


# Runs saved with another tenant than their Task's take the Task's, so that the key holds.
ALIGN_TENANTS = """
    UPDATE scheduler_taskrun r SET tenant_id = t.tenant_id
      FROM scheduler_task t
     WHERE r.task_id = t.id AND r.tenant_id <> t.tenant_id
"""


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("scheduler", "0013_taskrun_task_tenant_key"),
    ]

    operations = [
        migrations.RunSQL(ALIGN_TENANTS, reverse_sql=migrations.RunSQL.noop),
        migrations.RunSQL(
            "ALTER TABLE scheduler_taskrun VALIDATE CONSTRAINT taskrun_task_tenant_fk",
            reverse_sql=migrations.RunSQL.noop,
        ),
        RemoveIndexConcurrently(
            model_name="taskrun",
            name="taskrun_started_idx",
        ),
        AddIndexConcurrently(
            model_name="taskrun",
            index=models.Index(
                condition=models.Q(("started_at__isnull", False)),
                fields=["started_at"],
                name="taskrun_started_idx",
            ),
        ),
    ]
