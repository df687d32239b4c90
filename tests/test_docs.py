"""The documentation's Python samples run, so that they stay true.

A block is runnable when the line before its opening fence is
``<!-- test -->``::

    <!-- test -->
    ```python
    from myapp.models import Follow
    ...
    ```

The runnable blocks of one page run in order, in one namespace, in a fresh
database (one test per page). ``myapp`` is the test-suite's own app
(``tests/testapp``: ``Follow``, ``Bookmark``, ``Entry``, ``Comment``,
``Sample``), so the pages can say ``from myapp.models import Follow`` as a
reader's project would. Blocks without the marker (settings, model
declarations, shell commands) are only read.
"""

from __future__ import annotations

import gc
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
BLOCK = re.compile(r"^<!-- test -->[ \t]*\n```python[ \t]*\n(.*?)^```", re.S | re.M)

#: Pages that must keep runnable samples (a lost marker fails here).
MUST_RUN = {"async.md", "getting-started.md", "concepts.md", "guarantees.md", "deployment.md", "migrating.md", "operations.md"}


def runnable_blocks(path: Path) -> list[tuple[int, str]]:
    """(first line number, code) of each runnable block of a page."""
    text = path.read_text()
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in BLOCK.finditer(text)]


PAGES_WITH_SAMPLES = [p for p in PAGES if runnable_blocks(p)]


def test_the_pages_keep_their_runnable_samples():
    assert MUST_RUN <= {p.name for p in PAGES_WITH_SAMPLES}
    # every marker is followed by a python block (a typo would skip it silently)
    for page in PAGES:
        text = page.read_text()
        assert text.count("<!-- test -->") == len(runnable_blocks(page)), page.name


@pytest.fixture
def myapp(monkeypatch: pytest.MonkeyPatch) -> None:
    """``import myapp.models`` gives the test app's models."""
    import tests.testapp
    import tests.testapp.models

    monkeypatch.setitem(sys.modules, "myapp", tests.testapp)
    monkeypatch.setitem(sys.modules, "myapp.models", tests.testapp.models)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("page", PAGES_WITH_SAMPLES, ids=lambda p: p.name)
def test_runnable_samples(page: Path, myapp: None) -> None:
    namespace: dict[str, object] = {"__name__": f"docs.{page.stem}"}
    try:
        for line, code in runnable_blocks(page):
            name = f"{page.relative_to(ROOT)}:{line}"
            exec(compile(code, name, "exec"), namespace)  # noqa: S102
    finally:
        # clients a page made (listy.ListCache(...)) must not outlive it:
        # the registry would keep fanning later tests' writes out to them
        namespace.clear()
        gc.collect()
