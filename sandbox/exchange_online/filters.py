"""A small OPATH (``-Filter``) parser for Get-Mailbox.

Supports comparisons ``Property -op value`` with -eq -ne -gt -ge -lt -le -like -notlike, joined by -and,
-or, -not and parentheses. Values are 'single' or "double" quoted strings, $true, $false, $null or bare
words. Multi-valued properties (EmailAddresses, ExtensionCustomAttributeN) match when any value matches,
as Exchange documents for ExtensionCustomAttribute (exchange-facts §5).
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import re
from collections.abc import Callable
from typing import Any

from .errors import ExchangeError

Predicate = Callable[[dict[str, Any]], bool]

_BOOL = "bool"
_TEXT = "text"
_DATE = "date"
_MULTI = "multi"
PROPERTIES: dict[str, str] = {
    "IsDirSynced": _BOOL,
    "IsExchangeCloudManaged": _BOOL,
    "HiddenFromAddressListsEnabled": _BOOL,
    "WhenChangedUTC": _DATE,
    "WhenCreatedUTC": _DATE,
    "EmailAddresses": _MULTI,
    **{
        name: _TEXT
        for name in (
            "Alias",
            "DisplayName",
            "Name",
            "UserPrincipalName",
            "PrimarySmtpAddress",
            "WindowsEmailAddress",
            "RecipientTypeDetails",
            "ExternalDirectoryObjectId",
            "Guid",
            "ExchangeGuid",
            "DistinguishedName",
        )
    },  # fmt: skip
    **{f"CustomAttribute{i}": _TEXT for i in range(1, 16)},
    **{f"ExtensionCustomAttribute{i}": _MULTI for i in range(1, 6)},
}
_BY_LOWER = {name.lower(): name for name in PROPERTIES}
_OPERATORS = ("eq", "ne", "gt", "ge", "lt", "le", "like", "notlike")

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<lparen>\() | (?P<rparen>\)) |
        (?P<op>-[A-Za-z]+) |
        '(?P<squote>(?:[^']|'')*)' |
        "(?P<dquote>(?:[^"]|"")*)" |
        (?P<var>\$[A-Za-z_]+) |
        (?P<word>[^\s()'"]+)
    )""",
    re.X,
)
_DATE_FORMATS = ("%m/%d/%Y %H:%M:%S", "%m/%d/%Y %I:%M:%S %p", "%m/%d/%Y %H:%M", "%m/%d/%Y")


def _filter_error(text: str, position: int, reason: str = "Invalid filter syntax.") -> ExchangeError:
    return ExchangeError(
        400,
        "System.Management.Automation.ParameterBindingException",
        f'Cannot bind parameter \'Filter\' to the target. Exception setting "Filter": "{reason} For a description '
        f'of the filter parameter syntax see the command help. "{text}" at position {position + 1}."',
    )


def _tokens(text: str) -> list[tuple[str, Any, int]]:
    tokens: list[tuple[str, Any, int]] = []
    position = 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _TOKEN.match(text, position)
        if not match or match.end() == position:
            raise _filter_error(text, position)
        kind = match.lastgroup
        value = match.group(kind)
        start = match.start(kind)
        if kind == "squote":
            kind, value = "value", value.replace("''", "'")
        elif kind == "dquote":
            kind, value = "value", value.replace('""', '"')
        elif kind == "var":
            named = {"$true": True, "$false": False, "$null": None}
            if value.lower() not in named:
                raise _filter_error(text, start, f"Variable {value} is not supported here.")
            kind, value = "value", named[value.lower()]
        tokens.append((kind, value, start))
        position = match.end()
    return tokens


def parse_date(value: object) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    text = value.strip()
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        parsed = None
        for fmt in _DATE_FORMATS:
            try:
                parsed = dt.datetime.strptime(text, fmt)  # noqa: DTZ007 (a UTC property: naive means UTC)
                break
            except ValueError:
                continue
    if parsed is None:
        return None
    return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed.astimezone(dt.UTC)


def _as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "$true", "$false"):
        return value.lower().lstrip("$") == "true"
    return None


class _Parser:
    def __init__(self, text: str, *, filterable: Callable[[str], bool]) -> None:
        self.text, self.tokens, self.index, self.filterable = text, _tokens(text), 0, filterable

    def parse(self) -> Predicate:
        if not self.tokens:
            raise _filter_error(self.text, 0)
        predicate = self._or()
        if self.index < len(self.tokens):
            raise _filter_error(self.text, self.tokens[self.index][2])
        return predicate

    def _peek_op(self, *names: str) -> bool:
        if self.index < len(self.tokens):
            kind, value, _ = self.tokens[self.index]
            return kind == "op" and value[1:].lower() in names
        return False

    def _or(self) -> Predicate:
        parts = [self._and()]
        while self._peek_op("or"):
            self.index += 1
            parts.append(self._and())
        return parts[0] if len(parts) == 1 else (lambda r, ps=tuple(parts): any(p(r) for p in ps))

    def _and(self) -> Predicate:
        parts = [self._not()]
        while self._peek_op("and"):
            self.index += 1
            parts.append(self._not())
        return parts[0] if len(parts) == 1 else (lambda r, ps=tuple(parts): all(p(r) for p in ps))

    def _not(self) -> Predicate:
        if self._peek_op("not"):
            self.index += 1
            inner = self._not()
            return lambda r: not inner(r)
        return self._primary()

    def _take(self) -> tuple[str, Any, int]:
        if self.index >= len(self.tokens):
            raise _filter_error(self.text, len(self.text))
        token = self.tokens[self.index]
        self.index += 1
        return token

    def _primary(self) -> Predicate:
        kind, value, position = self._take()
        if kind == "lparen":
            inner = self._or()
            if self._take()[0] != "rparen":
                raise _filter_error(self.text, position)
            return inner
        if kind != "word":
            raise _filter_error(self.text, position)
        name = _BY_LOWER.get(value.lower())
        if name is None or not self.filterable(name):
            raise _filter_error(self.text, position, f"'{value}' is not a recognized filterable property.")
        op_kind, op, op_position = self._take()
        if op_kind != "op" or op[1:].lower() not in _OPERATORS:
            raise _filter_error(self.text, op_position)
        value_kind, operand, value_position = self._take()
        if value_kind not in ("value", "word"):
            raise _filter_error(self.text, value_position)
        return _comparison(
            name, op[1:].lower(), operand, lambda reason: _filter_error(self.text, value_position, reason)
        )


def _comparison(name: str, op: str, operand: Any, fail: Callable[[str], ExchangeError]) -> Predicate:
    kind = PROPERTIES[name]
    if op in ("like", "notlike"):
        if kind in (_BOOL, _DATE) or operand is None:
            raise fail(f"The operator -{op} can't be used with the property '{name}'.")
        pattern = str(operand).lower()

        def like(record: dict[str, Any]) -> bool:
            values = record.get(name) if kind == _MULTI else [record.get(name)]
            hit = any(_like(v, pattern) for v in values or [] if v is not None)
            return hit if op == "like" else not hit

        return like
    if kind == _BOOL:
        wanted = _as_bool(operand)
        if wanted is None or op not in ("eq", "ne"):
            raise fail(f"The value '{operand}' can't be compared with the Boolean property '{name}'.")
        return lambda r: (bool(r.get(name)) == wanted) == (op == "eq")
    if kind == _DATE:
        when = parse_date(operand)
        if when is None:
            raise fail(f"The value '{operand}' isn't a valid date and time.")
        compare = _ORDER[op]
        return lambda r: r.get(name) is not None and compare(r[name], when)
    if operand is None:
        if op not in ("eq", "ne"):
            raise fail("$null can only be compared with -eq or -ne.")
        return lambda r: (not r.get(name)) == (op == "eq")
    text = str(operand).lower()
    if kind == _MULTI:
        if op not in ("eq", "ne"):
            raise fail(f"The operator -{op} can't be used with the multi-valued property '{name}'.")

        def contains(record: dict[str, Any]) -> bool:
            hit = any(_same(v, text) for v in record.get(name) or [])
            return hit if op == "eq" else not hit

        return contains
    compare = _ORDER[op]
    return lambda r: compare(str(r.get(name) or "").lower(), text)


_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
}


def _same(stored: str, wanted: str) -> bool:
    """A stored value equals the operand; for proxy addresses an operand without a prefix matches any SMTP one."""
    stored = stored.lower()
    if stored == wanted:
        return True
    return ":" not in wanted and stored.startswith("smtp:") and stored[5:] == wanted


def _like(stored: Any, pattern: str) -> bool:
    text = str(stored).lower()
    if fnmatch.fnmatchcase(text, pattern):
        return True
    return text.startswith("smtp:") and ":" not in pattern and fnmatch.fnmatchcase(text[5:], pattern)


def compile_filter(text: str, *, filterable: Callable[[str], bool] = lambda name: True) -> Predicate:
    """Compile an OPATH filter into a predicate over mailbox records, or raise a 400 ExchangeError."""
    if not isinstance(text, str):
        raise _filter_error(str(text), 0)
    return _Parser(text, filterable=filterable).parse()
