"""TaskRun's task and tenant foreign keys become one: (tenant_id, task_id) references the
Task's (tenant_id, id), so a run always carries its Task's tenant and each inserted run is
checked once, not twice. That key is also the index of a tenant's Tasks, and the
identical-task constraint leads with the integration: Task loses both single-column
indexes."""

import django.db.models.deletion
from django.db import migrations, models

# Added NOT VALID (no scan; new runs are checked from now on); the next migration aligns
# and validates the existing ones outside this transaction, without blocking their writes.
ADD_KEY = """
    ALTER TABLE scheduler_taskrun ADD CONSTRAINT taskrun_task_tenant_fk
        FOREIGN KEY (tenant_id, task_id) REFERENCES scheduler_task (tenant_id, id)
        ON UPDATE CASCADE DEFERRABLE INITIALLY DEFERRED NOT VALID
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
        migrations.RunSQL(ADD_KEY, reverse_sql=DROP_KEY),
    ]
