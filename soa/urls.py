from django.urls import path

from soa import views, views_changes, views_history, views_prerequisites, views_readiness, views_tenant_default

urlpatterns = [
    path("", views.mailbox_list_view, name="mailbox_list"),
    path("export.csv", views.mailbox_export_view, name="mailbox_export"),
    path("readiness/", views_readiness.readiness_view, name="readiness"),
    path("readiness/report/", views_readiness.readiness_report_view, name="readiness_report"),
    path("readiness/export.csv", views_readiness.readiness_export_view, name="readiness_export"),
    path("readiness/prerequisites/version/", views_prerequisites.connect_version_view, name="prerequisite_version"),
    path("readiness/prerequisites/canary/", views_prerequisites.canary_check_view, name="prerequisite_canary"),
    path("readiness/prerequisites/check/", views_prerequisites.check_now_view, name="prerequisite_check"),
    path("readiness/tenant-default/", views_tenant_default.tenant_default_view, name="tenant_default"),
    path(
        "readiness/tenant-default/request/",
        views_tenant_default.tenant_default_request_view,
        name="tenant_default_request",
    ),
    path(
        "readiness/tenant-default/<int:request_id>/approve/",
        views_tenant_default.tenant_default_approve_view,
        name="tenant_default_approve",
    ),
    path(
        "readiness/tenant-default/<int:request_id>/retry/",
        views_tenant_default.tenant_default_retry_view,
        name="tenant_default_retry",
    ),
    path(
        "readiness/tenant-default/<int:request_id>/cancel/",
        views_tenant_default.tenant_default_cancel_view,
        name="tenant_default_cancel",
    ),
    path("<int:pk>/", views.mailbox_detail_view, name="mailbox_detail"),
    path("<int:pk>/history/", views_history.mailbox_timeline_view, name="mailbox_timeline"),
    path("<int:pk>/history/as-of/", views_history.mailbox_as_of_view, name="mailbox_as_of"),
    path("<int:pk>/history/compare/", views_history.mailbox_compare_view, name="mailbox_compare"),
    path("<int:pk>/edit/<str:op>/", views_changes.change_edit_view, name="change_edit"),
    path("<int:pk>/edit/<str:op>/preview/", views_changes.change_preview_view, name="change_preview"),
    path("<int:pk>/edit/<str:op>/confirm/", views_changes.change_confirm_view, name="change_confirm"),
    path("<int:pk>/changes/", views_changes.mailbox_changes_view, name="mailbox_changes"),
    path("<int:pk>/changes/<int:change_id>/approve/", views_changes.change_approve_view, name="change_approve"),
    path("<int:pk>/changes/<int:change_id>/reject/", views_changes.change_reject_view, name="change_reject"),
    path("<int:pk>/changes/<int:change_id>/cancel/", views_changes.change_cancel_view, name="change_cancel"),
]
