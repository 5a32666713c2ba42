"""The host's services (records, trace log, step configuration), whichever side runs the
plug-in: the Sluice host inside a component, or the local harness (`sluice_sdk.testing`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, List, Optional, Protocol, Sequence

from .values import Attributes, Entity, Value, check

OPERATORS = (
    "equal",
    "not-equal",
    "greater-than",
    "greater-equal",
    "less-than",
    "less-equal",
    "is-null",
    "is-not-null",
)


@dataclass(frozen=True)
class Condition:
    """`attribute operator value`; `is-null` and `is-not-null` take no value."""

    attribute: str
    operator: str
    value: Value = None

    def __post_init__(self) -> None:
        if self.operator not in OPERATORS:
            raise ValueError(f"unknown operator {self.operator!r}: one of {', '.join(OPERATORS)}")
        check(self.value)


class Host(Protocol):
    def create(self, entity: str, attributes: Attributes) -> str: ...
    def retrieve(self, entity: str, id: str, columns: Sequence[str]) -> Entity: ...
    def update(self, entity: str, id: str, attributes: Attributes) -> None: ...
    def delete(self, entity: str, id: str) -> None: ...
    def query(
        self, entity: str, columns: Sequence[str], conditions: Sequence[Condition], top: Optional[int]
    ) -> List[Entity]: ...
    def trace(self, message: str) -> None: ...
    def unsecure_config(self) -> Optional[str]: ...
    def secure_config(self) -> Optional[str]: ...


_current: Optional[Host] = None


def use(host: Optional[Host]) -> Optional[Host]:
    """Makes `host` serve the calls below; returns the one it replaces."""
    global _current
    previous, _current = _current, host
    return previous


def current() -> Host:
    if _current is None:
        raise RuntimeError("no host: call this from a plug-in's run (or sluice_sdk.testing.run)")
    return _current


def _checked(attributes: Attributes) -> Attributes:
    return {name: check(value) for name, value in attributes.items()}


class records:
    """The organisation's records. Every call is confined to the plug-in's organisation;
    writes fire events with depth + 1. Failures raise `RecordNotFound` or
    `InvalidRecordCall` (uncaught, the run fails with a transient error)."""

    @staticmethod
    def create(entity: str, attributes: Attributes) -> str:
        """Creates a record and returns its id (an `id` attribute sets it)."""
        return current().create(entity, _checked(attributes))

    @staticmethod
    def retrieve(entity: str, id: str, columns: Iterable[str] = ()) -> Entity:
        """Reads a record; no columns means all of them."""
        return current().retrieve(entity, id, list(columns))

    @staticmethod
    def update(entity: str, id: str, attributes: Attributes) -> None:
        current().update(entity, id, _checked(attributes))

    @staticmethod
    def delete(entity: str, id: str) -> None:
        current().delete(entity, id)

    @staticmethod
    def query(
        entity: str,
        where: Iterable[Condition] = (),
        columns: Iterable[str] = (),
        top: Optional[int] = None,
    ) -> List[Entity]:
        """The records of `entity` meeting every condition (at most `top`)."""
        return current().query(entity, list(columns), list(where), top)


def trace(message: str) -> None:
    """Adds a line to the run's trace log (the host keeps the newest lines)."""
    current().trace(str(message))


class config:
    """The configuration of the step registration running this plug-in."""

    @staticmethod
    def unsecure() -> Optional[str]:
        return current().unsecure_config()

    @staticmethod
    def secure() -> Optional[str]:
        return current().secure_config()
