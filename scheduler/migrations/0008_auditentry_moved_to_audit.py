# The audit trail's model now belongs to the audit app (same table): state only.

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ("scheduler", "0007_taskrun_trigger_from_file"),
        ("audit", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[migrations.DeleteModel(name="AuditEntry")],
        ),
    ]
