"""Django settings for django-stubs' mypy plugin (``make typecheck``): the
apps whose models the checked code uses, nothing that needs a server."""

SECRET_KEY = "typecheck"
USE_TZ = True
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "listy", "tests.testapp"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
