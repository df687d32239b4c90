"""django-cacheops (Redis) process: cacheops on, Listy's app not installed
(no Listy signal handler runs on this process's writes)."""

from benchproj.settings import *  # noqa: F401,F403
from benchproj.settings import REDIS_URL

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "cacheops",
    "benchproj.follows",
]
CACHEOPS_REDIS = REDIS_URL
CACHEOPS = {"follows.follow": {"ops": "all", "timeout": 60 * 60}}
CACHEOPS_DEGRADE_ON_FAILURE = False
