# The audit trail's model moves here from the scheduler app; its table stays as it is.

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ("scheduler", "0002_audit_workers"),
        ("tenants", "0001_initial"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.CreateModel(
                    name="AuditEntry",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                        ("created_at", models.DateTimeField(db_index=True, default=django.utils.timezone.now)),
                        ("username", models.CharField(blank=True, help_text="Kept if the user goes.", max_length=150)),
                        ("action", models.CharField(choices=[("create", "Created"), ("change", "Changed"), ("delete", "Deleted"), ("pause", "Paused"), ("resume", "Resumed"), ("run_now", "Run now"), ("job_retry", "Job retried"), ("job_cancel", "Job cancelled"), ("job_abort", "Job aborted")], max_length=16)),
                        ("model", models.CharField(max_length=64)),
                        ("object_id", models.CharField(max_length=64)),
                        ("object_repr", models.CharField(max_length=200)),
                        ("changes", models.JSONField(blank=True, default=dict, help_text="field: [before, after]")),
                        ("tenant", models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name="+", to="tenants.tenant")),
                        ("user", models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name="+", to=settings.AUTH_USER_MODEL)),
                    ],
                    options={
                        "verbose_name_plural": "audit entries",
                        "ordering": ["-created_at", "-id"],
                        "db_table": "scheduler_auditentry",
                    },
                ),
            ],
        ),
    ]
