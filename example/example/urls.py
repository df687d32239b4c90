"""The example's pages: a user's follow list from an async and a sync view."""

from django.urls import path

from social import views

urlpatterns = [
    path("following/<int:user_id>/", views.following),
    path("following-sync/<int:user_id>/", views.following_sync),
]
