from django.apps import AppConfig


class TenantsConfig(AppConfig):
    name = "tenants"
    verbose_name = "Tenants"

    def ready(self) -> None:
        # Registers the Locker key checks (tenants.E001, E002, W001) run at every start-up.
        from tenants import checks  # noqa: F401
