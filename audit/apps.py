from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "audit"
    verbose_name = "Audit"

    def ready(self) -> None:
        from audit import records, retention  # noqa: F401 (retention: check audit.E001)

        records.connect()
