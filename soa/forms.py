"""Forms of the domain pages."""

from django import forms

from portal.dn import InvalidDn, normalize_dn
from soa.choices import Authority
from soa.selectors import SORTS

# One level of the OU picker's tree: an option's text keeps no other markup.
INDENT = "\u00a0" * 3
RECIPIENT_TYPES = ["UserMailbox", "SharedMailbox", "RoomMailbox", "EquipmentMailbox"]


class MailboxFilterForm(forms.Form):
    """Search and filters of the mailbox list; all optional."""

    q = forms.CharField(required=False, max_length=320, label="A word of the name, the UPN or an address starts with")
    authority = forms.ChoiceField(required=False, choices=[("", "Any authority"), *Authority.choices])
    recipient_type = forms.ChoiceField(
        required=False, choices=[("", "Any type"), *((t, t) for t in RECIPIENT_TYPES)], label="Recipient type"
    )
    ou = forms.CharField(required=False, max_length=1024, label="In OU (and below)")
    department = forms.CharField(required=False, max_length=256)
    drift = forms.ChoiceField(
        required=False, choices=[("", "Drift or not"), ("yes", "With drift"), ("no", "Without drift")]
    )
    sort = forms.ChoiceField(
        required=False,
        choices=[
            ("name", "Name A-Z"),
            ("-name", "Name Z-A"),
            ("upn", "UPN A-Z"),
            ("-upn", "UPN Z-A"),
            ("department", "Department A-Z"),
            ("-department", "Department Z-A"),
        ],  # fmt: skip
    )

    def clean_ou(self) -> str:
        ou = self.cleaned_data["ou"].strip()
        if ou:
            try:
                normalize_dn(ou)
            except InvalidDn as exc:
                raise forms.ValidationError(str(exc)) from None
        return ou

    def clean_sort(self) -> str:
        return self.cleaned_data["sort"] if self.cleaned_data["sort"] in SORTS else "name"

    def selector_filters(self) -> dict:
        data = self.cleaned_data
        return {
            "query": data.get("q", ""),
            "authority": data.get("authority", ""),
            "recipient_type": data.get("recipient_type", ""),
            "ou": data.get("ou", ""),
            "drift": {"yes": True, "no": False}.get(data.get("drift", "")),
            "department": data.get("department", ""),
        }

    def offer_ous(self, tree) -> None:
        """Show the OU filter as a picker of ``tree`` (selectors.OuChoice), indented by depth; an OU given in the
        address that the tree does not hold (typed, or bookmarked before a move) stays offered, as given."""
        choices = [("", "Any OU")]
        choices += [(ou.dn, f"{INDENT * ou.depth}{ou.label} ({ou.mailboxes})") for ou in tree]
        given = self.data.get("ou", "") if self.is_bound else ""
        if given and given not in {dn for dn, _ in choices}:
            choices.append((given, given))
        self.fields["ou"].widget = forms.Select(choices=choices)
