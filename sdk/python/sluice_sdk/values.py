"""Record values as Python values, and their JSON form (the one `sluice plugin run` reads).

| WIT value          | Python                                   | JSON                                   |
|--------------------|------------------------------------------|----------------------------------------|
| null               | None                                     | null                                   |
| string             | str                                      | "text"                                 |
| integer            | int                                      | 42                                     |
| decimal            | decimal.Decimal                          | 12.5 or {"decimal": "12.50"}           |
| boolean            | bool                                     | true                                   |
| date-time          | datetime.datetime (UTC)                  | {"date-time": "2026-11-23T05:00:00Z"}  |
| money              | Money (a Decimal)                        | {"money": "100.00"}                    |
| option-set         | OptionSet (an int)                       | {"option-set": 3}                      |
| entity-reference   | EntityReference                          | {"entity-reference": {...}}            |
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Dict, Optional, Union

MAX_SCALE = 18
"""The most decimal places a decimal or money value may have (the host refuses more)."""


class Money(Decimal):
    """An amount of money: a decimal the host stores as `money`."""


class OptionSet(int):
    """The value of a choice attribute (Dataverse's OptionSetValue)."""


@dataclass(frozen=True)
class EntityReference:
    """A reference to another record (a lookup)."""

    entity: str
    id: str
    name: Optional[str] = None


Value = Union[None, str, int, bool, Decimal, Money, _dt.datetime, OptionSet, EntityReference]
Attributes = Dict[str, Value]


@dataclass
class Entity:
    """One record: its entity's logical name, its id and its attributes."""

    logical_name: str
    id: str
    attributes: Attributes = field(default_factory=dict)

    def get(self, name: str, default: Value = None) -> Value:
        return self.attributes.get(name, default)

    def __getitem__(self, name: str) -> Value:
        return self.attributes[name]


def check(value: Any) -> Value:
    """Returns `value` if the host can hold it; raises `ValueError` naming why not."""
    if value is None or isinstance(value, (str, bool, OptionSet, EntityReference)):
        return value
    if isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            raise ValueError(f"{value} does not fit a 64-bit integer")
        return value
    if isinstance(value, Decimal):
        decimal_parts(value)
        return value
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            raise ValueError(f"{value!r} has no time zone: give date-times in UTC")
        return value
    if isinstance(value, float):
        raise ValueError(f"{value!r} is a float: use decimal.Decimal for exact numbers")
    raise ValueError(f"{type(value).__name__} is not a record value")


def decimal_parts(value: Decimal) -> tuple[int, int]:
    """(units, scale) with value == units / 10**scale."""
    if not value.is_finite():
        raise ValueError(f"{value} is not a finite number")
    sign, digits, exponent = value.as_tuple()
    scale = max(0, -int(exponent))
    if scale > MAX_SCALE:
        raise ValueError(f"{value} has more than {MAX_SCALE} decimal places")
    units = int(value.scaleb(scale))
    if not -(2**63) <= units < 2**63:
        raise ValueError(f"{value} does not fit a 64-bit decimal")
    return units, scale


def from_parts(units: int, scale: int, kind: type = Decimal) -> Decimal:
    return kind(Decimal(units).scaleb(-scale))


_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)


def datetime_parts(value: _dt.datetime) -> tuple[int, int]:
    """(seconds, nanoseconds) since the Unix epoch."""
    delta = value - _EPOCH
    seconds = delta.days * 86_400 + delta.seconds
    return seconds, delta.microseconds * 1000


def datetime_of(seconds: int, nanoseconds: int) -> _dt.datetime:
    return _EPOCH + _dt.timedelta(seconds=seconds, microseconds=nanoseconds // 1000)


def from_json(value: Any) -> Value:
    """A value from its JSON form."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, dict) and len(value) == 1:
        ((kind, inner),) = value.items()
        if kind == "decimal":
            return check(Decimal(str(inner)))
        if kind == "money":
            return check(Money(str(inner)))
        if kind == "date-time":
            return _dt.datetime.fromisoformat(str(inner).replace("Z", "+00:00")).astimezone(_dt.timezone.utc)
        if kind == "option-set":
            return OptionSet(int(inner))
        if kind == "entity-reference":
            return EntityReference(inner["entity"], inner["id"], inner.get("name"))
    raise ValueError(f"{value!r} is not a record value in JSON form")


def to_json(value: Value) -> Any:
    """A value's JSON form."""
    if isinstance(value, Money):
        return {"money": str(value)}
    if isinstance(value, Decimal):
        return {"decimal": str(value)}
    if isinstance(value, _dt.datetime):
        return {"date-time": value.astimezone(_dt.timezone.utc).isoformat().replace("+00:00", "Z")}
    if isinstance(value, OptionSet):
        return {"option-set": int(value)}
    if isinstance(value, EntityReference):
        reference = {"entity": value.entity, "id": value.id}
        if value.name is not None:
            reference["name"] = value.name
        return {"entity-reference": reference}
    return value


def attributes_from_json(attributes: Optional[dict]) -> Attributes:
    return {name: from_json(value) for name, value in (attributes or {}).items()}


def entity_from_json(entity: Optional[dict]) -> Optional[Entity]:
    if entity is None:
        return None
    return Entity(entity["logical_name"], entity["id"], attributes_from_json(entity.get("attributes")))
