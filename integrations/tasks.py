"""procrastinate imports each app's ``tasks`` module; this one imports every integration's."""

from integrations.base.registry import autodiscover

autodiscover()
