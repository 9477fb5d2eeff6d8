"""Alertmanager-style label matchers: ``name="value"``, ``!=``, ``=~`` and ``!~`` (anchored regex)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_MATCHER = re.compile(r'^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*(?:"((?:[^"\\]|\\.)*)"|(\S*))\s*$')


@dataclass(frozen=True)
class Matcher:
    name: str
    op: str
    value: str

    def matches(self, labels: dict[str, str]) -> bool:
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        hit = re.fullmatch(self.value, actual) is not None
        return hit if self.op == "=~" else not hit

    def to_dict(self) -> dict[str, object]:
        # The shape of Alertmanager's API v2 matcher.
        return {
            "name": self.name,
            "value": self.value,
            "isRegex": "~" in self.op,
            "isEqual": "!" not in self.op,
        }

    def __str__(self) -> str:
        return f'{self.name}{self.op}"{self.value}"'


def parse_matcher(text: str) -> Matcher:
    m = _MATCHER.match(text)
    if not m:
        raise ValueError(f'bad matcher {text!r}; expected name="value" with =, !=, =~ or !~')
    name, op = m.group(1), m.group(2)
    value = m.group(3) if m.group(3) is not None else m.group(4)
    value = value.replace('\\"', '"')
    if "~" in op:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"bad regex in matcher {text!r}: {exc}") from None
    return Matcher(name, op, value)


def matcher_from_obj(obj: object) -> Matcher:
    """A matcher from a string or an Alertmanager API v2 matcher object."""
    if isinstance(obj, str):
        return parse_matcher(obj)
    if isinstance(obj, dict) and "name" in obj and "value" in obj:
        op = (
            ("=~" if obj.get("isRegex") else "=")
            if obj.get("isEqual", True)
            else ("!~" if obj.get("isRegex") else "!=")
        )
        return parse_matcher(f'{obj["name"]}{op}"{str(obj["value"]).replace(chr(34), chr(92) + chr(34))}"')
    raise ValueError(f"bad matcher {obj!r}")


def all_match(matchers: list[Matcher], labels: dict[str, str]) -> bool:
    return all(m.matches(labels) for m in matchers)
