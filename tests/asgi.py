"""The test project as an ASGI application (``uvicorn tests.asgi:application``),
with the per-request registry middleware (``LISTY_TEST_MIDDLEWARE``)."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
os.environ.setdefault("LISTY_TEST_MIDDLEWARE", "1")

from django.core.asgi import get_asgi_application  # noqa: E402

application = get_asgi_application()
