"""TaskRun's task and tenant foreign keys become one: (tenant_id, task_id) references the
Task's (tenant_id, id), so a run always carries its Task's tenant and each inserted run is
checked once, not twice. That key is also the index of a tenant's Tasks, and the
identical-task constraint leads with the integration: Task loses both single-column
indexes. The index of runs by start time holds only started runs."""

import django.db.models.deletion
from django.db import migrations, models

# Runs saved with another tenant than their Task's take the Task's, so that the key holds.
ALIGN_TENANTS = """
    UPDATE scheduler_taskrun r SET tenant_id = t.tenant_id
      FROM scheduler_task t
     WHERE r.task_id = t.id AND r.tenant_id <> t.tenant_id
"""

# Added NOT VALID, then validated: the scan of existing runs does not block their writes.
ADD_KEY = """
    ALTER TABLE scheduler_taskrun ADD CONSTRAINT taskrun_task_tenant_fk
        FOREIGN KEY (tenant_id, task_id) REFERENCES scheduler_task (tenant_id, id)
        ON UPDATE CASCADE DEFERRABLE INITIALLY DEFERRED NOT VALID;
    ALTER TABLE scheduler_taskrun VALIDATE CONSTRAINT taskrun_task_tenant_fk;
"""

DROP_KEY = "ALTER TABLE scheduler_taskrun DROP CONSTRAINT taskrun_task_tenant_fk"


class Migration(migrations.Migration):
    dependencies = [
        ("scheduler", "0012_task_tenant_rank"),
        ("tenants", "0002_tenant_fair_share"),
    ]

    operations = [
        migrations.AddConstraint(
            model_name="task",
            constraint=models.UniqueConstraint(fields=("tenant", "id"), name="unique_task_tenant"),
        ),
        migrations.AlterField(
            model_name="task",
            name="integration",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="tasks",
                to="integrations.integration",
            ),
        ),
        migrations.AlterField(
            model_name="task",
            name="tenant",
            field=models.ForeignKey(
                blank=True,
                db_index=False,
                help_text="Always the integration's tenant (set from it when left empty).",
                on_delete=django.db.models.deletion.CASCADE,
                related_name="tasks",
                to="tenants.tenant",
            ),
        ),
        migrations.AlterField(
            model_name="taskrun",
            name="task",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="runs",
                to="scheduler.task",
            ),
        ),
        migrations.AlterField(
            model_name="taskrun",
            name="tenant",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="task_runs",
                to="tenants.tenant",
            ),
        ),
        migrations.RunSQL(ALIGN_TENANTS, reverse_sql=migrations.RunSQL.noop),
        migrations.RunSQL(ADD_KEY, reverse_sql=DROP_KEY),
        migrations.RemoveIndex(
            model_name="taskrun",
            name="taskrun_started_idx",
        ),
        migrations.AddIndex(
            model_name="taskrun",
            index=models.Index(
                condition=models.Q(("started_at__isnull", False)),
                fields=["started_at"],
                name="taskrun_started_idx",
            ),
        ),
    ]
