"""Packaging: one version (Cargo's), a license file, the metadata a user
and a type checker rely on. The wheel itself is installed and smoke-tested
without a compiler by ``scripts/test_wheel.sh`` (``make test-wheel``)."""

from __future__ import annotations

import tomllib
from importlib.metadata import metadata, version
from pathlib import Path

import listy
from listy import _native

ROOT = Path(__file__).resolve().parents[1]


def test_the_version_has_one_source_cargo() -> None:
    cargo = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["package"]["version"]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project and project["dynamic"] == ["version"]
    assert _native.__version__ == cargo
    assert listy.__version__ == cargo
    assert version("django-listy") == cargo  # what maturin wrote into the metadata


def test_license_file_is_mit_and_shipped() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "Listy contributors" in text
    meta = metadata("django-listy")
    assert "License :: OSI Approved :: MIT License" in meta.get_all("Classifier")


def test_metadata_is_complete() -> None:
    meta = metadata("django-listy")
    classifiers = meta.get_all("Classifier")
    assert "Typing :: Typed" in classifiers
    assert (Path(listy.__file__).parent / "py.typed").exists()
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL"))
    assert {"Homepage", "Documentation", "Source", "Changelog", "Issues"} <= set(urls)
    django_req = [r for r in meta.get_all("Requires-Dist") if r.lower().startswith("django") and "extra" not in r]
    assert django_req and "<" in django_req[0], f"Django needs an upper bound: {django_req}"


def test_pytest_plugin_is_registered_by_entry_point() -> None:
    from importlib.metadata import entry_points

    found = [e for e in entry_points(group="pytest11") if e.name == "listy"]
    assert [e.value for e in found] == ["listy.testing"]
