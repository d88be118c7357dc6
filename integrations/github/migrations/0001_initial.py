"""GithubUser, taken over from the integrations app with its table, rows and content type.

On every database the table already exists: integrations.0001_initial created it as
``integrations_githubuser``. This migration records the model in the github app under that
table, renames the table to the github app's own name (``github_githubuser``) and moves the
content type, so permissions and admin log entries keep pointing at it. It can be reversed.
"""

import django.db.models.deletion
from django.db import migrations, models

OLD_APP_LABEL = 'integrations'
NEW_APP_LABEL = 'github'


def _move_content_type(apps, from_label, to_label):
    content_type = apps.get_model('contenttypes', 'ContentType')
    if not content_type.objects.filter(app_label=to_label, model='githubuser').exists():
        content_type.objects.filter(app_label=from_label, model='githubuser').update(
            app_label=to_label
        )


def forwards(apps, schema_editor):
    _move_content_type(apps, OLD_APP_LABEL, NEW_APP_LABEL)


def backwards(apps, schema_editor):
    _move_content_type(apps, NEW_APP_LABEL, OLD_APP_LABEL)


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('contenttypes', '0002_remove_content_type_name'),
        ('integrations', '0002_githubuser_to_github_app'),
        ('tenants', '0001_initial'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='GithubUser',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('external_id', models.BigIntegerField(help_text="GitHub's numeric user id.")),
                        ('login', models.CharField(max_length=100)),
                        ('user_type', models.CharField(blank=True, max_length=32)),
                        ('site_admin', models.BooleanField(default=False)),
                        ('avatar_url', models.URLField(blank=True, max_length=500)),
                        ('html_url', models.URLField(blank=True, max_length=500)),
                        ('first_seen_at', models.DateTimeField(auto_now_add=True)),
                        ('last_seen_at', models.DateTimeField()),
                        ('tenant', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='github_users', to='tenants.tenant')),
                        ('integration', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='github_users', to='integrations.integration')),
                    ],
                    options={
                        'verbose_name': 'GitHub user',
                        'ordering': ['tenant', 'login'],
                        'db_table': 'integrations_githubuser',
                        'constraints': [
                            models.UniqueConstraint(fields=('tenant', 'external_id'), name='unique_github_user_per_tenant'),
                        ],
                    },
                ),
            ],
            database_operations=[],
        ),
        migrations.AlterModelTable(name='githubuser', table=None),
        migrations.RunPython(forwards, backwards),
    ]
