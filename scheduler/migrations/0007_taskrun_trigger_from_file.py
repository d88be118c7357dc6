"""The TaskRun trigger, from scheduler/sql/taskrun_status_trigger.sql.

0004 stays as it was written (history: what databases got at that step). From here the
SQL lives in its file, where the system check ``scheduler.E001`` compares it with the
installed copy; its content is the same as 0004's. Undoing this step restores 0004's
trigger.
"""

import importlib

from django.db import migrations

from scheduler import sql

TRIGGER_0004 = importlib.import_module("scheduler.migrations.0004_taskrun_trigger")


class Migration(migrations.Migration):
    dependencies = [
        ("scheduler", "0006_task_plan_error"),
        ("procrastinate", "0041_post_retry_failed_job"),
    ]

    operations = [
        migrations.RunSQL(
            sql.load("taskrun_status_trigger"),
            reverse_sql=TRIGGER_0004.BACKWARD + TRIGGER_0004.FORWARD,
        )
    ]
