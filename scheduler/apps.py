from django.apps import AppConfig


class SchedulerConfig(AppConfig):
    name = "scheduler"
    verbose_name = "Scheduler"

    def ready(self) -> None:
        # Connect the receivers; checks also registers system check scheduler.E001 (the
        # TaskRun trigger) and reinstalls that trigger after migrate when it differs;
        # retention registers the checks of its settings (scheduler.E002-E004).
        from scheduler import checks, retention, signals  # noqa: F401
