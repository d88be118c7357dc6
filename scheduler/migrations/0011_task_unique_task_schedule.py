"""Refuse a second Task with the same integration, name, cron, time zone and kwargs.

Such a Task runs the same job twice per tick. Where a database already holds some, the
constraint cannot be added: the migration stops, naming them and how to remove the extra
ones, and changes nothing (which of them to keep, with its run history, is the operator's
choice).
"""

import json

from django.core.management.base import CommandError
from django.db import migrations, models
from django.db.models.functions import MD5, Cast


def refuse_identical_tasks(apps, schema_editor):
    Task = apps.get_model("scheduler", "Task")
    groups: dict[tuple, list[int]] = {}
    rows = Task.objects.order_by("pk").values_list(
        "pk", "integration_id", "name", "cron", "timezone", "kwargs"
    )
    for pk, *key in rows.iterator():
        key[-1] = json.dumps(key[-1], sort_keys=True)
        groups.setdefault(tuple(key), []).append(pk)
    duplicates = [ids for ids in groups.values() if len(ids) > 1]
    if not duplicates:
        return
    listed = "; ".join(
        f"tasks {', '.join(map(str, ids))} (integration {key[0]}, {key[1]} [{key[2]}])"
        for key, ids in groups.items()
        if len(ids) > 1
    )
    extra = [pk for ids in duplicates for pk in ids[1:]]
    raise CommandError(
        "Identical tasks (same integration, name, cron, time zone and kwargs) run the same "
        f"job twice per tick and are refused, but some exist: {listed}. Keep one of each "
        "group: delete the others in admin, or with ./run.sh manage shell -c "
        f"'from scheduler.models import Task; Task.objects.filter(pk__in={extra}).delete()' "
        "(this keeps the oldest of each), then run migrate again."
    )


class Migration(migrations.Migration):
    dependencies = [
        ("scheduler", "0010_lock_slot_wakeup"),
    ]

    operations = [
        migrations.RunPython(refuse_identical_tasks, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="task",
            constraint=models.UniqueConstraint(
                models.F("integration"),
                models.F("name"),
                models.F("cron"),
                models.F("timezone"),
                MD5(Cast("kwargs", models.TextField())),
                name="unique_task_schedule",
            ),
        ),
    ]
