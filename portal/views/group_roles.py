"""The administrators' pages for Entra ID group mappings: which group gives which role, and where."""

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from portal.decorators import action_required
from portal.forms import GroupMappingForm, ReasonForm
from portal.group_roles import group_mapping_list, group_mapping_remove, group_mapping_save
from portal.models import GroupRoleMapping
from portal.roles import Action, Role
from portal.services import PortalError


def _list_page(request: HttpRequest, form: GroupMappingForm) -> HttpResponse:
    context = {"mappings": group_mapping_list(user=request.user), "form": form}
    return render(request, "portal/group_mapping_list.html", context)


def _save(request: HttpRequest, form: GroupMappingForm, mapping: GroupRoleMapping | None) -> GroupRoleMapping | None:
    if not form.is_valid():
        return None
    data = form.cleaned_data
    try:
        return group_mapping_save(
            actor=request.user,
            mapping=mapping,
            group_id=data["group_id"],
            display_name=data["display_name"],
            role=Role(data["role"]),
            tenant_wide=data["tenant_wide"],
            scopes=data["scopes"],
            reason=data["reason"],
        )
    except PortalError as exc:
        form.add_error(None, str(exc))
        return None


@action_required(Action.PORTAL_CONFIGURE)
def group_mapping_list_view(request: HttpRequest) -> HttpResponse:
    return _list_page(request, GroupMappingForm())


@require_POST
@action_required(Action.PORTAL_CONFIGURE)
def group_mapping_add_view(request: HttpRequest) -> HttpResponse:
    form = GroupMappingForm(request.POST)
    saved = _save(request, form, None)
    if saved is None:
        return _list_page(request, form)
    messages.success(request, f"Members of {saved.display_name} get the {saved.role.name} role at their next sign-in.")
    return redirect("group_mapping_list")


@action_required(Action.PORTAL_CONFIGURE)
def group_mapping_edit_view(request: HttpRequest, mapping_id: int) -> HttpResponse:
    """GET shows the mapping in a form; POST (with a reason) changes it."""
    mapping = get_object_or_404(GroupRoleMapping.objects.select_related("role"), pk=mapping_id)
    if request.method == "POST":
        form = GroupMappingForm(request.POST)
        saved = _save(request, form, mapping)
        if saved is not None:
            messages.success(
                request, f"Changed the mapping of {saved.display_name}; members get it at their next sign-in."
            )
            return redirect("group_mapping_list")
    else:
        form = GroupMappingForm(
            initial={
                "group_id": mapping.group_id,
                "display_name": mapping.display_name,
                "role": mapping.role.name,
                "tenant_wide": mapping.tenant_wide,
                "scopes": "\n".join(mapping.scopes),
            }
        )
    return render(request, "portal/group_mapping_edit.html", {"mapping": mapping, "form": form})


@action_required(Action.PORTAL_CONFIGURE)
def group_mapping_remove_view(request: HttpRequest, mapping_id: int) -> HttpResponse:
    """GET shows the confirmation; POST (with a reason) removes."""
    mapping = get_object_or_404(GroupRoleMapping.objects.select_related("role"), pk=mapping_id)
    form = ReasonForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        try:
            group_mapping_remove(actor=request.user, mapping=mapping, reason=form.cleaned_data["reason"])
        except PortalError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Removed the {mapping.role.name} mapping of {mapping.display_name}.")
            return redirect("group_mapping_list")
    return render(request, "portal/group_mapping_remove.html", {"mapping": mapping, "form": form})
