"""Forms of the mailbox editing pages: one form per edit, the same fields from the editor through the preview to the
confirmation (the preview carries them as hidden inputs), and the approver's and canceller's reasons.

The forms only shape input into operations (soa.validation's format); every rule about values is the service's, and
its errors come back by field name (``FieldError.field``) and are put on the field the person typed in."""

from django import forms

from portal.limits import REASON_MAX_LENGTH
from soa.choices import ChangeOperation
from soa.validation import CUSTOM_ATTRIBUTES, EMAIL_ADDRESSES, EXTENSION_ATTRIBUTES, HIDDEN, OPERATIONS, FieldError

# In the attribute map's order (CustomAttribute1..15), not the frozensets' order.
_CUSTOM = sorted(CUSTOM_ATTRIBUTES, key=lambda name: int(name.removeprefix("CustomAttribute")))
_EXTENSION = sorted(EXTENSION_ATTRIBUTES, key=lambda name: int(name.removeprefix("ExtensionCustomAttribute")))

# Which inputs each kind of edit takes, and the attribute row of the mailbox page it belongs to (None: the row is
# the one the ``attribute`` field names).
EDIT_FIELDS: dict[str, tuple[str, ...]] = {
    ChangeOperation.ADD_ALIAS: ("address",),
    ChangeOperation.REMOVE_ALIAS: ("address",),
    ChangeOperation.MAKE_PRIMARY: ("address",),
    ChangeOperation.SET_CUSTOM_ATTRIBUTE: ("attribute", "value"),
    ChangeOperation.CLEAR_CUSTOM_ATTRIBUTE: ("attribute",),
    ChangeOperation.ADD_EXTENSION_VALUE: ("attribute", "value"),
    ChangeOperation.REMOVE_EXTENSION_VALUE: ("attribute", "value"),
    ChangeOperation.HIDE_FROM_ADDRESS_LISTS: (),
    ChangeOperation.SHOW_IN_ADDRESS_LISTS: (),
}
_ROW: dict[str, str | None] = {
    ChangeOperation.ADD_ALIAS: EMAIL_ADDRESSES,
    ChangeOperation.REMOVE_ALIAS: EMAIL_ADDRESSES,
    ChangeOperation.MAKE_PRIMARY: EMAIL_ADDRESSES,
    ChangeOperation.HIDE_FROM_ADDRESS_LISTS: HIDDEN,
    ChangeOperation.SHOW_IN_ADDRESS_LISTS: HIDDEN,
}


class ChangeForm(forms.Form):
    """One edit of one mailbox. ``op`` comes from the URL; ``base_version`` is the version of the page the person
    looked at; ``idempotency_key`` is made when the confirmation is rendered, so sending it twice makes one request.
    ``reason`` is asked on the preview (required there when CHANGE_REASON_REQUIRED; ``require_reason``)."""

    address = forms.CharField(required=False, max_length=2000, label="Address")
    attribute = forms.ChoiceField(required=False, choices=[], label="Attribute")
    value = forms.CharField(required=False, max_length=4000, label="Value", strip=False)
    base_version = forms.IntegerField(min_value=0, widget=forms.HiddenInput)
    idempotency_key = forms.CharField(required=False, max_length=64, widget=forms.HiddenInput)
    reason = forms.CharField(
        required=False, max_length=REASON_MAX_LENGTH, label="Reason", widget=forms.Textarea(attrs={"rows": 2})
    )

    def __init__(self, op: str, *args, require_reason: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.op = op
        self.require_reason = require_reason
        custom = op in (ChangeOperation.SET_CUSTOM_ATTRIBUTE, ChangeOperation.CLEAR_CUSTOM_ATTRIBUTE)
        names = _CUSTOM if custom else _EXTENSION
        self.fields["attribute"].choices = [(name, name) for name in names]
        if op == ChangeOperation.ADD_ALIAS:
            self.fields["address"].label = "New address"
            self.fields["address"].help_text = "name@domain; the mailbox keeps its other addresses."
        elif op == ChangeOperation.MAKE_PRIMARY:
            self.fields["address"].label = "Address to make primary"
        elif op == ChangeOperation.REMOVE_ALIAS:
            self.fields["address"].label = "Address to remove"
        if op == ChangeOperation.SET_CUSTOM_ATTRIBUTE:
            self.fields["value"].label = "New value"
        elif op == ChangeOperation.ADD_EXTENSION_VALUE:
            self.fields["value"].label = "Value to add"
        elif op == ChangeOperation.REMOVE_EXTENSION_VALUE:
            self.fields["value"].label = "Value to remove"
        for name in EDIT_FIELDS[op]:
            self.fields[name].required = True
        # Django's own "This field is required." says nothing about what to type.
        self.fields["address"].error_messages["required"] = "Enter an address."
        self.fields["value"].error_messages["required"] = "Enter a value."
        self.fields["reason"].required = require_reason
        self.fields["reason"].error_messages["required"] = "Give a reason for this change; it goes in the history."

    @property
    def edit_fields(self) -> list[forms.BoundField]:
        """The inputs of this kind of edit, in the order the person fills them."""
        return [self[name] for name in EDIT_FIELDS[self.op]]

    @property
    def row(self) -> str:
        """The Exchange attribute (its Exchange Online name) whose row of the mailbox page this edit belongs to."""
        source = self.data if self.is_bound else self.initial
        return _ROW.get(self.op) or str(source.get("attribute") or "")

    def edit_errors_only_on_reason(self) -> bool:
        return bool(self.errors) and set(self.errors) == {"reason"}

    def operations(self) -> list[dict]:
        """The one operation this form asks for, in soa.validation's format (validated by the service)."""
        data = self.cleaned_data
        operation: dict = {"op": self.op}
        for name in EDIT_FIELDS[self.op]:
            operation[name] = data[name]
        return [operation]

    def add_field_errors(self, errors: tuple[FieldError, ...]) -> None:
        """Put each of the service's errors on the input it is about; errors about the edit as a whole on the form."""
        for error in errors:
            self.add_error(self._field_for(error), error.message)

    def _field_for(self, error: FieldError) -> str | None:
        inputs = EDIT_FIELDS[self.op]
        if error.field == "reason":
            return "reason"
        if error.field == OPERATIONS or error.field == HIDDEN:
            return None
        if error.field == EMAIL_ADDRESSES and "address" in inputs:
            return "address"
        if "value" in inputs and error.field == self.cleaned_data.get("attribute"):
            return "value"
        if "attribute" in inputs:
            return "attribute"
        return None


class DecisionForm(forms.Form):
    """An approver's decision on a change request: the reason is optional to approve, required to reject."""

    reason = forms.CharField(
        required=False, max_length=REASON_MAX_LENGTH, label="Reason", widget=forms.Textarea(attrs={"rows": 2})
    )

    def __init__(self, *args, require_reason: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["reason"].required = require_reason
        self.fields["reason"].error_messages["required"] = (
            "Give a reason for rejecting the change; the person who asked for it reads it."
        )
