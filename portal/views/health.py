"""The health endpoint for load balancers and operators."""

from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from portal.health import check_all
from portal.roles import Action, may


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """200 when every component answers; 503 naming the ones that do not. A non-essential check that fails (the
    periodic jobs) answers 200 with status "degraded", naming it: a load balancer keeps the node, a monitor alerts.

    Needs no login (load balancers call it). The reason a component is down can name internal hosts, so
    only a signed-in administrator sees it.
    """
    statuses = check_all()
    down = [status.name for status in statuses if not status.ok and status.essential]
    degraded = [status.name for status in statuses if not status.ok and not status.essential]
    show_detail = may(request.user, Action.JOBS_VIEW)
    components = {}
    for status in statuses:
        components[status.name] = {"ok": status.ok, "ms": status.millis}
        if show_detail:
            components[status.name]["detail"] = status.detail
    state = "down" if down else "degraded" if degraded else "ok"
    return JsonResponse(
        {"status": state, "down": down, "degraded": degraded, "components": components}, status=503 if down else 200
    )
