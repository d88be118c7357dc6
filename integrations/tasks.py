"""procrastinate imports each app's ``tasks`` module; this one makes sure every integration
type is registered (each integration app's ``tasks`` module is imported) before any is used."""

from integrations.base.registry import autodiscover

autodiscover()
