"""Runs a plug-in's function locally, with fake records, for tests (pytest or any other).

It reads the same JSON files as `sluice plugin run`: a context (`--input`) and a list of
records (`--records`), and applies the host's rules for what a step of each stage sees.

```python
from sluice_sdk import testing
from app import execute

def test_numbers_a_new_account():
    result = testing.run(execute, "account-create.json", records="accounts.json", config="ACC")
    assert result.output.output_parameters["accountnumber"] == "ACC-000042"
    assert result.records.get("account", "a-new")["accountnumber"] == "ACC-000042"
```
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from . import host
from .context import (
    BusinessError,
    Context,
    InvalidRecordCall,
    Output,
    RecordNotFound,
    TransientError,
    describe,
)
from .host import Condition
from .values import Attributes, Entity, Value, attributes_from_json, check, entity_from_json

JsonSource = Union[str, Path, dict, list, None]


def _load(source: JsonSource) -> Any:
    if source is None or isinstance(source, (dict, list)):
        return source
    return json.loads(Path(source).read_text())


def context_from_json(data: dict) -> Context:
    """A context from the JSON form `sluice plugin run --input` reads."""
    known = {
        "org_id", "user_id", "message", "entity", "record_id", "stage", "mode", "depth",
        "correlation_id", "input_parameters", "target", "pre_image", "post_image", "shared_variables",
    }
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown context field(s): {', '.join(sorted(unknown))}")
    return Context(
        message=data["message"],
        entity=data["entity"],
        org_id=data.get("org_id", "local"),
        user_id=data.get("user_id", "local"),
        record_id=data.get("record_id"),
        stage=data.get("stage", "post-operation"),
        mode=data.get("mode", "asynchronous"),
        depth=data.get("depth", 1),
        correlation_id=data.get("correlation_id") or str(uuid.uuid4()),
        input_parameters=attributes_from_json(data.get("input_parameters")),
        target=entity_from_json(data.get("target")),
        pre_image=entity_from_json(data.get("pre_image")),
        post_image=entity_from_json(data.get("post_image")),
        shared_variables=attributes_from_json(data.get("shared_variables")),
    )


def for_stage(context: Context, stage: Optional[str] = None) -> Context:
    """The context as a step of `stage` sees it (the host's rule): before the operation
    there is no post-image yet; a context that gives one is taken as the Target."""
    context = replace(context, stage=stage or context.stage)
    if context.stage != "post-operation":
        post_image, context.post_image = context.post_image, None
        if context.target is None and context.message != "Delete":
            context.target = post_image
    return context


def _comparable(a: Value, b: Value) -> Optional[Tuple[Any, Any]]:
    numbers = (int, Decimal)
    if isinstance(a, bool) or isinstance(b, bool):
        return (a, b) if isinstance(a, bool) and isinstance(b, bool) else None
    if isinstance(a, numbers) and isinstance(b, numbers):
        return Decimal(a), Decimal(b)
    if type(a) is type(b) and not hasattr(a, "entity"):
        return a, b
    return None


def _meets(record: Entity, condition: Condition) -> bool:
    value = record.attributes.get(condition.attribute)
    if condition.operator == "is-null":
        return value is None
    if condition.operator == "is-not-null":
        return value is not None
    if condition.operator == "equal":
        return value == condition.value
    if condition.operator == "not-equal":
        return value != condition.value
    pair = _comparable(value, condition.value) if value is not None else None
    if pair is None:
        return False
    a, b = pair
    return {
        "greater-than": a > b,
        "greater-equal": a >= b,
        "less-than": a < b,
        "less-equal": a <= b,
    }[condition.operator]


class FakeRecords:
    """An organisation's records in memory, with the host's record semantics."""

    def __init__(self, records: Sequence[Entity] = ()):
        self._records: Dict[Tuple[str, str], Entity] = {}
        for record in records:
            self._records[(record.logical_name, record.id)] = Entity(
                record.logical_name, record.id, dict(record.attributes)
            )

    def get(self, entity: str, id: str) -> Optional[Entity]:
        """The record as it is now (None if there is none)."""
        return self._records.get((entity, id))

    def all(self, entity: str) -> List[Entity]:
        return sorted((r for (e, _), r in self._records.items() if e == entity), key=lambda r: r.id)

    def _existing(self, entity: str, id: str) -> Entity:
        if not entity:
            raise InvalidRecordCall("an entity name is required")
        record = self._records.get((entity, id))
        if record is None:
            raise RecordNotFound(f"{entity} {id}")
        return record

    def create(self, entity: str, attributes: Attributes) -> str:
        if not entity:
            raise InvalidRecordCall("an entity name is required")
        attributes = dict(attributes)
        id = attributes.pop("id", None) or str(uuid.uuid4())
        if not isinstance(id, str):
            raise InvalidRecordCall("a record's id is a string")
        if (entity, id) in self._records:
            raise InvalidRecordCall(f"{entity} {id} already exists")
        self._records[(entity, id)] = Entity(entity, id, attributes)
        return id

    def retrieve(self, entity: str, id: str, columns: Sequence[str]) -> Entity:
        record = self._existing(entity, id)
        kept = {k: v for k, v in record.attributes.items() if not columns or k in columns}
        return Entity(entity, id, kept)

    def update(self, entity: str, id: str, attributes: Attributes) -> None:
        if "id" in attributes:
            raise InvalidRecordCall("a record's id cannot be updated")
        self._existing(entity, id).attributes.update(attributes)

    def delete(self, entity: str, id: str) -> None:
        self._existing(entity, id)
        del self._records[(entity, id)]

    def query(self, entity, columns, conditions, top):
        if not entity:
            raise InvalidRecordCall("an entity name is required")
        found = [r for r in self.all(entity) if all(_meets(r, c) for c in conditions)]
        found = found[:top] if top is not None else found
        return [self.retrieve(entity, r.id, columns) for r in found]


@dataclass
class Result:
    """How a local run ended."""

    output: Optional[Output] = None
    """The output, if the run succeeded."""
    error: Optional[Tuple[str, str]] = None
    """(`business` or `transient`, message), if it failed: what the job would record."""
    trace: List[str] = field(default_factory=list)
    changes: List[Tuple[str, str, str]] = field(default_factory=list)
    """The record writes made, in order: (operation, entity, id)."""
    records: FakeRecords = field(default_factory=FakeRecords)
    """The records after the run."""

    @property
    def succeeded(self) -> bool:
        return self.error is None


class _LocalHost:
    def __init__(self, records: FakeRecords, unsecure: Optional[str], secure: Optional[str], result: Result):
        self.records, self.unsecure, self.secure, self.result = records, unsecure, secure, result

    def create(self, entity, attributes):
        id = self.records.create(entity, attributes)
        self.result.changes.append(("create", entity, id))
        return id

    def retrieve(self, entity, id, columns):
        return self.records.retrieve(entity, id, columns)

    def update(self, entity, id, attributes):
        self.records.update(entity, id, attributes)
        self.result.changes.append(("update", entity, id))

    def delete(self, entity, id):
        self.records.delete(entity, id)
        self.result.changes.append(("delete", entity, id))

    def query(self, entity, columns, conditions, top):
        return self.records.query(entity, columns, conditions, top)

    def trace(self, message):
        self.result.trace.append(message)

    def unsecure_config(self):
        return self.unsecure

    def secure_config(self):
        return self.secure


def run(
    execute: Callable[[Context], Output],
    context: Union[JsonSource, Context],
    records: Union[JsonSource, Sequence[Entity]] = None,
    config: Optional[str] = None,
    secure_config: Optional[str] = None,
    stage: Optional[str] = None,
) -> Result:
    """Runs `execute` once as the host would: `context` is a Context, a dict of its JSON
    form or a path to a JSON file; `records` a list of Entity, of their JSON form, or a
    path. A record the context is about (its record id, with a Target or post-image) is
    created if `records` lacks it, as the host's write would have made it."""
    if not isinstance(context, Context):
        context = context_from_json(_load(context))
    context = for_stage(context, stage)
    loaded = _load(records) if isinstance(records, (str, Path)) else records
    entities = [r if isinstance(r, Entity) else entity_from_json(r) for r in (loaded or [])]
    store = FakeRecords(entities)
    written = context.post_image or context.target
    if context.record_id and written is not None and store.get(context.entity, context.record_id) is None:
        if context.message != "Delete":
            store.create(context.entity, {**written.attributes, "id": context.record_id})
    result = Result(records=store)
    previous = host.use(_LocalHost(store, config, secure_config, result))
    try:
        output = execute(context)
        output = Output() if output is None else output
        if not isinstance(output, Output):
            raise TypeError(f"a plug-in returns an Output, not {type(output).__name__}")
        for value in [*output.output_parameters.values(), *output.shared_variables.values()]:
            check(value)
        result.output = output
    except BusinessError as e:
        result.error = ("business", str(e))
    except TransientError as e:
        result.error = ("transient", str(e))
    except Exception as e:  # noqa: BLE001 - as the component reports it
        result.error = ("transient", describe(e))
    finally:
        host.use(previous)
    return result
