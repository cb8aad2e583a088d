"""URL map of the portal."""

from django.contrib import admin
from django.urls import URLPattern, include, path
from django_rq.urls import get_admin_urlpatterns, get_api_urlpatterns

from portal.decorators import action_required, job_dashboard_policy, read_only
from portal.roles import Action
from portal.views import (
    audit,
    audit_undo,
    connections,
    dashboard,
    drift,
    entra_signin,
    group_roles,
    health,
    inventory,
    roles,
    signin,
    writeback,
)

# django-rq's dashboard, wrapped so only the admin role reaches it (its own views also require is_staff).
# Its stats JSON is wrapped too: the portal does not use django-rq's API tokens.
_admin_only = action_required(Action.JOBS_VIEW)
_rq_api = [URLPattern(p.pattern, _admin_only(p.callback), p.default_args, p.name) for p in get_api_urlpatterns()]
rq_patterns = (
    get_admin_urlpatterns(view_wrapper=lambda view: _admin_only(read_only(job_dashboard_policy(view)))) + _rq_api,
    "django_rq",
)

urlpatterns = [
    path("", dashboard.dashboard, name="dashboard"),
    path("login/", signin.login_view, name="login"),
    path("logout/", signin.SignOutView.as_view(), name="logout"),
    path("login/entra/", entra_signin.entra_signin_start, name="entra_signin_start"),
    path("login/entra/callback/", entra_signin.entra_signin_callback, name="entra_signin_callback"),
    path("healthz", health.healthz, name="healthz"),
    path("audit/", audit.audit_list, name="audit_list"),
    path("audit/export.<str:fmt>", audit.audit_export, name="audit_export"),
    path("audit/verify/", audit.audit_verify_view, name="audit_verify"),
    path("audit/verify/<str:job_id>/", audit.audit_verification, name="audit_verification"),
    path("audit/events/<int:event_id>/undo/", audit_undo.audit_undo, name="audit_undo"),
    path(
        "audit/correlations/<str:correlation_id>/undo/",
        audit_undo.audit_undo_correlation,
        name="audit_undo_correlation",
    ),
    path("mailboxes/", include("soa.urls")),
    path("waves/", include("soa.urls_waves")),
    path("bulk-edits/", include("soa.urls_bulk")),
    path("mailboxes/<int:pk>/writeback/", writeback.mailbox_writeback_view, name="mailbox_writeback"),
    path("mailboxes/<int:pk>/writeback/<int:task_id>/retry/", writeback.writeback_retry_view, name="writeback_retry"),
    path("drift/", drift.drift_view, name="drift"),
    path("drift/scan/", drift.drift_scan_view, name="drift_scan"),
    path("drift/repair/", drift.drift_bulk_repair_view, name="drift_bulk_repair"),
    path("drift/<int:finding_id>/repair/", drift.drift_repair_view, name="drift_repair"),
    path("inventory/", inventory.inventory_view, name="inventory"),
    path("inventory/start/", inventory.inventory_start_view, name="inventory_start"),
    path("settings/connections/", connections.connections_view, name="connections"),
    path("settings/connections/test/", connections.connection_test_view, name="connection_test"),
    path("roles/", roles.role_list, name="role_list"),
    path("roles/assign/", roles.role_assign_view, name="role_assign"),
    path("roles/<int:assignment_id>/revoke/", roles.role_revoke_view, name="role_revoke"),
    path("roles/groups/", group_roles.group_mapping_list_view, name="group_mapping_list"),
    path("roles/groups/add/", group_roles.group_mapping_add_view, name="group_mapping_add"),
    path("roles/groups/<int:mapping_id>/edit/", group_roles.group_mapping_edit_view, name="group_mapping_edit"),
    path("roles/groups/<int:mapping_id>/remove/", group_roles.group_mapping_remove_view, name="group_mapping_remove"),
    path("settings/sign-in-locks/", signin.signin_locks_view, name="signin_locks"),
    path(
        "settings/sign-in-locks/<int:throttle_id>/release/",
        signin.signin_lock_release_view,
        name="signin_lock_release",
    ),
    path("jobs/", include(rq_patterns)),
    # django-rq's pages extend the admin's templates and link to its index; no model is registered there.
    # The admin site's sign-out and password change, audited like the portal's (its sign-in form: portal/admin.py).
    path("django-admin/logout/", signin.SignOutView.as_view(next_page="admin:login")),
    path("django-admin/password_change/", admin.site.admin_view(signin.admin_password_change)),
    path("django-admin/", admin.site.urls),
]

handler403 = "portal.views.errors.permission_denied"
handler404 = "portal.views.errors.page_not_found"
handler500 = "portal.views.errors.server_error"
