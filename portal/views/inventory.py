"""The administrators' page for inventory imports, with live progress while one runs."""

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from portal.decorators import action_required
from portal.roles import Action
from writeback.inventory import InventoryError, inventory_run_request
from writeback.models import InventoryRun

HISTORY = 20


def _context() -> dict:
    runs = list(InventoryRun.objects.select_related("requested_by")[:HISTORY])
    current = next((run for run in runs if run.is_open), None)
    completed = InventoryRun.objects.filter(state=InventoryRun.State.DONE).exists()
    return {"runs": runs, "current": current, "has_completed_run": completed}


@action_required(Action.PORTAL_CONFIGURE)
def inventory_view(request: HttpRequest) -> HttpResponse:
    template = "writeback/inventory.html#inventory-progress" if request.htmx else "writeback/inventory.html"
    return render(request, template, _context())


@require_POST
@action_required(Action.PORTAL_CONFIGURE)
def inventory_start_view(request: HttpRequest) -> HttpResponse:
    mode = request.POST.get("mode", InventoryRun.Mode.FULL)
    if mode not in InventoryRun.Mode.values:
        messages.error(request, "Choose a full or an incremental import.")
        return redirect("inventory")
    try:
        run = inventory_run_request(actor=request.user, mode=mode)
    except InventoryError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Import #{run.pk} is queued.")
    return redirect("inventory")
