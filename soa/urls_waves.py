"""Routes of the pilot-wave pages, under /waves/ (the approvers' email links to /waves/<pk>/)."""

from django.urls import path

from soa import views_wave_members as members
from soa import views_wave_settings as wave_settings
from soa import views_waves as views

urlpatterns = [
    path("", views.wave_list_view, name="wave_list"),
    path("new/", views.wave_create_view, name="wave_create"),
    path("<int:pk>/", views.wave_detail_view, name="wave_detail"),
    path("<int:pk>/preflight/", views.wave_preflight_view, name="wave_preflight"),
    path("<int:pk>/members/add/", members.wave_add_members_view, name="wave_add_members"),
    path("<int:pk>/members/filter/", members.wave_add_by_filter_view, name="wave_add_by_filter"),
    path("<int:pk>/members/csv/", members.wave_add_from_csv_view, name="wave_add_from_csv"),
    path("<int:pk>/members/remove/", members.wave_remove_members_view, name="wave_remove_members"),
    path("<int:pk>/submit/", views.wave_submit_view, name="wave_submit"),
    path("<int:pk>/withdraw/", views.wave_withdraw_view, name="wave_withdraw"),
    path("<int:pk>/cancel/", views.wave_cancel_view, name="wave_cancel"),
    path("<int:pk>/approve/", views.wave_approve_view, name="wave_approve"),
    path("<int:pk>/reject/", views.wave_reject_view, name="wave_reject"),
    path("<int:pk>/progress/", views.wave_progress_view, name="wave_progress"),
    path("<int:pk>/members/", views.wave_members_view, name="wave_members"),
    path("<int:pk>/start/", views.wave_start_view, name="wave_start"),
    path("<int:pk>/pause/", views.wave_pause_view, name="wave_pause"),
    path("<int:pk>/resume/", views.wave_resume_view, name="wave_resume"),
    path("<int:pk>/members/<int:member_id>/retry/", views.wave_member_retry_view, name="wave_member_retry"),
    path("<int:pk>/rollback/", views.wave_rollback_view, name="wave_rollback"),
    path("<int:pk>/settings/", wave_settings.wave_edit_view, name="wave_edit"),
    path("<int:pk>/clone/", wave_settings.wave_clone_view, name="wave_clone"),
    path("<int:pk>/results.csv", members.wave_results_export_view, name="wave_results_export"),
]
