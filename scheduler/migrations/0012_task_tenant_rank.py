"""Each Task's rank among its tenant's Tasks, by creation (id), and the due index that
takes a herd rank by rank; TaskRun's task and tenant lose the indexes that composite
indexes already cover."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("scheduler", "0011_task_unique_task_schedule"),
        ("tenants", "0002_tenant_fair_share"),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name="task",
            name="task_due_idx",
        ),
        migrations.AddField(
            model_name="task",
            name="tenant_rank",
            field=models.PositiveIntegerField(
                default=0,
                editable=False,
                help_text="This task's place among its tenant's tasks (1 for the first created): when many tasks are due at one instant the scheduler takes them rank by rank, every tenant's first task before any tenant's second.",
            ),
        ),
        migrations.RunSQL(
            """
            UPDATE scheduler_task t SET tenant_rank = r.rank
              FROM (SELECT id, row_number() OVER (PARTITION BY tenant_id ORDER BY id) AS rank
                      FROM scheduler_task) r
             WHERE t.id = r.id
            """,
            reverse_sql=migrations.RunSQL.noop,
        ),
        migrations.AddIndex(
            model_name="task",
            index=models.Index(
                condition=models.Q(("enabled", True)),
                fields=["next_run_at", "tenant_rank", "tenant", "id"],
                name="task_due_idx",
            ),
        ),
        migrations.AlterField(
            model_name="taskrun",
            name="task",
            field=models.ForeignKey(
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
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="task_runs",
                to="tenants.tenant",
            ),
        ),
    ]
