"""The longest free text the portal accepts, the same in every form and service that takes it.

Reasons and descriptions are read by people and copied into every audit event of the change: a limit keeps a
pasted document (or a crafted 2 MB field) out of the database and the pages that show it.
"""

REASON_MAX_LENGTH = 1000  # a reason or comment given for an action (kept in the audit log)
DESCRIPTION_MAX_LENGTH = 4000  # a wave's description
SCOPES_MAX_LENGTH = 20_000  # a role grant's OU scopes, one DN per line


def too_long(value: str, limit: int, what: str) -> str:
    """Why ``value`` is refused for its length (``what`` names the field: "The reason"), or "" when it fits."""
    if len(value or "") <= limit:
        return ""
    return f"{what} is too long ({len(value):,} characters); keep it to {limit:,} characters at most."
