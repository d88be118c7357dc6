from django.apps import AppConfig


class GithubConfig(AppConfig):
    """The github integration type: its GithubUser model, migrations, admin and tasks."""

    name = "integrations.github"
    label = "github"
    verbose_name = "GitHub"
