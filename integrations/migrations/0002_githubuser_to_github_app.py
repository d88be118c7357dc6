"""GithubUser belongs to the github app (integrations/github) from here on.

Only Django's record of the models changes: the table and its rows stay, and
github.0001_initial takes the model over.
"""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('integrations', '0001_initial'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name='GithubUser')],
            database_operations=[],
        ),
    ]
