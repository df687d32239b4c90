"""Helpers shared by Listy's management commands."""

from __future__ import annotations

from django.apps import apps
from django.core.management.base import CommandError
from django.db import models

from listy import registry
from listy.cache import ListCache


def clients_for(labels: list[str]) -> list[tuple[type[models.Model], ListCache]]:
    """(model, primary client) for each ``app_label.Model`` (all models if empty)."""
    if not labels:
        out = []
        for model in registry.all_models():
            client = registry.primary(model)
            if client is not None:
                out.append((model, client))
        return sorted(out, key=lambda mc: mc[0]._meta.label)
    out = []
    for label in labels:
        try:
            model = apps.get_model(label)
        except (LookupError, ValueError) as exc:
            raise CommandError(f"{label}: {exc}") from None
        client = registry.primary(model)
        if client is None:
            raise CommandError(f"{label} has no Listy cache (no CachingManager or ListCache)")
        out.append((model, client))
    return out
