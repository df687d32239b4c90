from django.apps import AppConfig


class FollowsConfig(AppConfig):
    name = "benchproj.follows"
    label = "follows"
    default_auto_field = "django.db.models.BigAutoField"
