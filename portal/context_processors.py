"""Template context shared by every page: the navigation the signed-in user's roles allow."""

from django.http import HttpRequest
from django.urls import reverse

from portal.roles import Action, granted_actions, user_roles

# (label, url name, action needed: one, or a tuple of which any will do). Only pages that exist are listed; later
# pages add their line here.
NAVIGATION: list[tuple[str, str, Action | tuple[Action, ...] | None]] = [
    ("Dashboard", "dashboard", None),
    ("Mailboxes", "mailbox_list", Action.MAILBOX_VIEW),
    ("Waves", "wave_list", Action.WAVE_VIEW),
    ("Readiness", "readiness", Action.WAVE_VIEW),
    # Help desk and operators make bulk edits; administrators see and control everyone's (soa.services.change_batches).
    ("Bulk edits", "bulk_upload", (Action.BULK_EDIT, Action.PORTAL_CONFIGURE)),
    ("Audit log", "audit_list", Action.AUDIT_VIEW),
    # Administrators and auditors see every finding, help desk those within its OUs (writeback.drift).
    ("Drift", "drift", (Action.PORTAL_CONFIGURE, Action.AUDIT_VIEW, Action.MAILBOX_EDIT)),
    ("Inventory", "inventory", Action.PORTAL_CONFIGURE),
    ("Roles", "role_list", Action.PORTAL_CONFIGURE),
    ("Connections", "connections", Action.PORTAL_CONFIGURE),
    ("Background jobs", "django_rq:home", Action.JOBS_VIEW),
]


def navigation(request: HttpRequest) -> dict:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"nav_items": [], "user_roles": [], "granted_actions": set()}
    granted = granted_actions(user)
    items = []
    for label, url_name, action in NAVIGATION:
        needed = action if isinstance(action, tuple) else (action,)
        if action is None or any(one in granted for one in needed):
            url = reverse(url_name)
            items.append({"label": label, "url": url, "active": request.path == url})
    return {
        "nav_items": items,
        "user_roles": sorted(user_roles(user)),
        "granted_actions": {action.value for action in granted},
    }
