"""Wake workers when a locked job stops running (scheduler/sql/lock_slot_wakeup.sql)."""

from django.db import migrations

from scheduler import sql


class Migration(migrations.Migration):
    dependencies = [
        ("scheduler", "0009_tenant_fair_share_state"),
    ]

    operations = [
        migrations.RunSQL(
            sql.load("lock_slot_wakeup"),
            reverse_sql=(
                "DROP TRIGGER IF EXISTS metronome_wake_lock_waiters ON procrastinate_jobs;"
                "DROP FUNCTION IF EXISTS metronome_wake_lock_waiters();"
            ),
        )
    ]
