from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    """``/healthz`` and ``/metrics``: how operators and their tools watch Metronome."""

    name = "monitoring"
    verbose_name = "Monitoring"
