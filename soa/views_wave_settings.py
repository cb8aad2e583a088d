"""A wave's settings after it was created: a draft's changed on their own page, and any wave copied into a new
draft (the way on after a rejection or a cancellation, without rewriting the original's history)."""

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from portal.decorators import action_required
from portal.roles import Action
from soa.forms_waves import WaveSettingsForm
from soa.services import SoaError
from soa.services.wave_clone import wave_clone
from soa.services.waves import update_refusal, wave_update
from soa.views_waves import _refused, refusal_status, wave_done, wave_or_404

SETTINGS = ("name", "description", "required_approvals", "batch_size", "max_rate", "window_start", "window_end")


@action_required(Action.WAVE_BUILD)
def wave_edit_view(request: HttpRequest, pk: int) -> HttpResponse:
    """The draft's settings as a form (GET), saved (POST): refused with the reason for a wave past its draft."""
    wave = wave_or_404(request, pk)
    refusal = update_refusal(request.user, wave)
    if refusal is not None:
        return _refused(request, wave, SoaError(str(refusal), refusal.kind))
    initial = {name: getattr(wave, name) for name in SETTINGS}
    form, status = WaveSettingsForm(request.POST or None, initial=initial), 200
    if request.method == "POST" and form.is_valid():
        changed = {name: form.cleaned_data[name] for name in SETTINGS if form.cleaned_data[name] != initial[name]}
        if not changed:
            messages.info(request, "Nothing changed.")
            return redirect("wave_detail", pk=wave.pk)
        try:
            wave = wave_update(actor=request.user, wave_id=wave.pk, **changed)
        except SoaError as exc:
            form.add_error(None, str(exc))
            status = refusal_status(exc)
        else:
            messages.success(request, f"Saved: {', '.join(form.fields[name].label or name for name in changed)}.")
            return redirect("wave_detail", pk=wave.pk)
    return render(request, "soa/wave_edit.html", {"wave": wave, "form": form}, status=status)


@require_POST
@action_required(Action.WAVE_BUILD)
def wave_clone_view(request: HttpRequest, pk: int) -> HttpResponse:
    wave = wave_or_404(request, pk)
    try:
        cloned = wave_clone(actor=request.user, wave_id=wave.pk)
    except SoaError as exc:
        return _refused(request, wave, exc)
    return wave_done(request, cloned.wave, "cloned", source=wave, members=cloned.members, left_out=cloned.left_out)
