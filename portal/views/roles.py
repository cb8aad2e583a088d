"""The administrators' page for role assignments and their OU scopes."""

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from portal.decorators import action_required
from portal.forms import ReasonForm, RoleAssignForm
from portal.models import RoleAssignment
from portal.roles import ROLE_ACTIONS, Action, Role
from portal.selectors import TENANT_WIDE, role_assignment_list, roles_by_scope
from portal.services import PortalError, role_assign, role_revoke


def _page(request: HttpRequest, form: RoleAssignForm, status: int = 200) -> HttpResponse:
    context = {
        "assignments": role_assignment_list(user=request.user),
        "by_scope": roles_by_scope(user=request.user),
        "tenant_wide": TENANT_WIDE,
        "form": form,
        "role_actions": {role.value: sorted(a.label for a in actions) for role, actions in ROLE_ACTIONS.items()},
    }
    return render(request, "portal/role_list.html", context, status=status)


@action_required(Action.PORTAL_CONFIGURE)
def role_list(request: HttpRequest) -> HttpResponse:
    return _page(request, RoleAssignForm())


@require_POST
@action_required(Action.PORTAL_CONFIGURE)
def role_assign_view(request: HttpRequest) -> HttpResponse:
    form = RoleAssignForm(request.POST)
    if form.is_valid():
        data = form.cleaned_data
        try:
            role_assign(
                actor=request.user,
                user=data["user"],
                role=Role(data["role"]),
                tenant_wide=data["tenant_wide"],
                scopes=data["scopes"],
                reason=data["reason"],
            )
        except PortalError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"{data['user'].get_username()} now holds the {data['role']} role.")
            return redirect("role_list")
    return _page(request, form)


@action_required(Action.PORTAL_CONFIGURE)
def role_revoke_view(request: HttpRequest, assignment_id: int) -> HttpResponse:
    """GET shows the confirmation; POST (with a reason) revokes."""
    assignment = get_object_or_404(RoleAssignment.objects.select_related("user", "role"), pk=assignment_id)
    form = ReasonForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        try:
            role_revoke(
                actor=request.user,
                user=assignment.user,
                role=Role(assignment.role.name),
                reason=form.cleaned_data["reason"],
            )
        except PortalError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Revoked {assignment.role.name} from {assignment.user.get_username()}.")
            return redirect("role_list")
    return render(request, "portal/role_revoke.html", {"assignment": assignment, "form": form})
