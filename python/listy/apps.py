"""The Django app of Listy: wires signals, checks and foreign-key hooks."""

from __future__ import annotations

from django.apps import AppConfig, apps


class ListyConfig(AppConfig):
    """``INSTALLED_APPS += ["listy"]``."""

    name = "listy"
    label = "listy"
    verbose_name = "Listy"

    def ready(self) -> None:
        from listy import checks, signals  # noqa: F401 - registers the checks
        from listy.manager import install_fk_hooks

        signals.connect_all()
        install_fk_hooks(apps.get_models())
