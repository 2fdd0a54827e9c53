"""The Django app: applies ``settings.DURABLE_ANALYTICS`` to the module-level API."""

from __future__ import annotations

from typing import Any, Mapping

from django.apps import AppConfig
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

#: The settings name holding the Client options.
SETTING = "DURABLE_ANALYTICS"


def apply_settings(options: Mapping[str, Any]) -> None:
    """Set the module-level options; the default client is built from them on first use."""
    import durable_analytics

    unknown = sorted(set(options) - set(durable_analytics.SETTINGS))
    if unknown:
        raise ImproperlyConfigured(
            f"settings.{SETTING}: unknown option(s) {', '.join(unknown)}; "
            f"use names from durable_analytics.SETTINGS"
        )
    from durable_analytics.config import Config
    from durable_analytics.errors import ConfigError

    try:  # a bad option stops startup, not the first request; nothing is opened here
        Config.from_options(**{**durable_analytics._settings(), **options})
    except ConfigError as exc:
        raise ImproperlyConfigured(f"settings.{SETTING}: {exc}") from None
    for name, value in options.items():
        setattr(durable_analytics, name, value)


class DurableAnalyticsConfig(AppConfig):
    name = "durable_analytics.integrations.django"
    label = "durable_analytics"
    verbose_name = "durable-analytics"
    default = True

    def ready(self) -> None:
        options = getattr(settings, SETTING, None)
        if options is None:
            return
        if not isinstance(options, Mapping):
            raise ImproperlyConfigured(f"settings.{SETTING} must be a dict of Client options")
        apply_settings(options)
