"""Routes of the bulk edit pages, under /bulk-edits/."""

from django.urls import path

from soa import views_bulk as views

urlpatterns = [
    path("", views.bulk_upload_view, name="bulk_upload"),
    path("preview/", views.bulk_preview_view, name="bulk_preview"),
    path("confirm/", views.bulk_confirm_view, name="bulk_confirm"),
    path("<int:pk>/", views.bulk_detail_view, name="bulk_detail"),
    path("<int:pk>/pause/", views.bulk_pause_view, name="bulk_pause"),
    path("<int:pk>/resume/", views.bulk_resume_view, name="bulk_resume"),
    path("<int:pk>/cancel/", views.bulk_cancel_view, name="bulk_cancel"),
]
