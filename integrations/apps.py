from django.apps import AppConfig


class IntegrationsConfig(AppConfig):
    name = "integrations"
    verbose_name = "Integrations"

    def ready(self) -> None:
        # Registers integrations.E001: every integration folder is an installed app.
        from integrations import checks  # noqa: F401
