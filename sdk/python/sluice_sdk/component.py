"""The plug-in as a component: Python values to and from the WIT types componentize-py
generates (`wit_world`), and the `Handler` class componentize-py exports. Imported only
when `wit_world` exists, that is while componentize-py builds the plug-in."""

from __future__ import annotations

from typing import Callable, List, Optional, Sequence

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports import handler as wit_handler
from wit_world.imports import config as wit_config
from wit_world.imports import context as wit_context
from wit_world.imports import records as wit_records
from wit_world.imports import tracing as wit_tracing
from wit_world.imports import types as wit

from . import host, values
from .context import (
    BusinessError,
    Context,
    InvalidRecordCall,
    Output,
    RecordNotFound,
    TransientError,
    describe,
)
from .values import Attributes, Entity, EntityReference, Money, OptionSet, Value

_STAGES = {
    wit_context.Stage.PRE_VALIDATION: "pre-validation",
    wit_context.Stage.PRE_OPERATION: "pre-operation",
    wit_context.Stage.POST_OPERATION: "post-operation",
}
_MODES = {wit_context.Mode.SYNCHRONOUS: "synchronous", wit_context.Mode.ASYNCHRONOUS: "asynchronous"}
_OPERATORS = {name: wit_records.Operator[name.upper().replace("-", "_")] for name in host.OPERATORS}


def value_of(v: wit.Value) -> Value:
    if isinstance(v, wit.Value_Null):
        return None
    if isinstance(v, wit.Value_String):
        return v.value
    if isinstance(v, wit.Value_Integer):
        return v.value
    if isinstance(v, wit.Value_Boolean):
        return v.value
    if isinstance(v, wit.Value_Decimal):
        return values.from_parts(v.value.units, v.value.scale)
    if isinstance(v, wit.Value_Money):
        return values.from_parts(v.value.units, v.value.scale, Money)
    if isinstance(v, wit.Value_DateTime):
        return values.datetime_of(v.value.seconds, v.value.nanoseconds)
    if isinstance(v, wit.Value_OptionSet):
        return OptionSet(v.value)
    if isinstance(v, wit.Value_EntityReference):
        return EntityReference(v.value.entity, v.value.id, v.value.name)
    raise TypeError(f"unknown value {v!r}")


def wit_value(v: Value) -> wit.Value:
    # Order matters: bool is an int, OptionSet is an int, Money is a Decimal.
    if v is None:
        return wit.Value_Null()
    if isinstance(v, bool):
        return wit.Value_Boolean(v)
    if isinstance(v, OptionSet):
        return wit.Value_OptionSet(int(v))
    if isinstance(v, int):
        return wit.Value_Integer(v)
    if isinstance(v, str):
        return wit.Value_String(v)
    if isinstance(v, Money):
        return wit.Value_Money(wit.Decimal(*values.decimal_parts(v)))
    if isinstance(v, values.Decimal):
        return wit.Value_Decimal(wit.Decimal(*values.decimal_parts(v)))
    if isinstance(v, values._dt.datetime):
        return wit.Value_DateTime(wit.Datetime(*values.datetime_parts(v)))
    if isinstance(v, EntityReference):
        return wit.Value_EntityReference(wit.EntityReference(v.entity, v.id, v.name))
    values.check(v)
    raise TypeError(f"{type(v).__name__} is not a record value")


def attributes_of(attributes: List[wit.Attribute]) -> Attributes:
    return {a.name: value_of(a.value) for a in attributes}


def wit_attributes(attributes: Attributes) -> List[wit.Attribute]:
    return [wit.Attribute(name, wit_value(value)) for name, value in attributes.items()]


def entity_of(e: Optional[wit.Entity]) -> Optional[Entity]:
    return None if e is None else Entity(e.logical_name, e.id, attributes_of(e.attributes))


def context_of(c: wit_context.ExecutionContext) -> Context:
    return Context(
        message=c.message,
        entity=c.entity,
        org_id=c.org_id,
        user_id=c.user_id,
        record_id=c.record_id,
        stage=_STAGES[c.stage],
        mode=_MODES[c.mode],
        depth=c.depth,
        correlation_id=c.correlation_id,
        input_parameters=attributes_of(c.input_parameters),
        target=entity_of(c.target),
        pre_image=entity_of(c.pre_image),
        post_image=entity_of(c.post_image),
        shared_variables=attributes_of(c.shared_variables),
    )


def _record_call(call: Callable, *args):
    try:
        return call(*args)
    except Err as e:
        if isinstance(e.value, wit_records.RecordError_NotFound):
            raise RecordNotFound(e.value.value) from None
        raise InvalidRecordCall(e.value.value) from None


class SluiceHost:
    """The host's services through the component's imports."""

    def create(self, entity: str, attributes: Attributes) -> str:
        return _record_call(wit_records.create, entity, wit_attributes(attributes))

    def retrieve(self, entity: str, id: str, columns: Sequence[str]) -> Entity:
        return entity_of(_record_call(wit_records.retrieve, entity, id, list(columns)))

    def update(self, entity: str, id: str, attributes: Attributes) -> None:
        _record_call(wit_records.update, entity, id, wit_attributes(attributes))

    def delete(self, entity: str, id: str) -> None:
        _record_call(wit_records.delete, entity, id)

    def query(self, entity, columns, conditions, top):
        wanted = [
            wit_records.Condition(c.attribute, _OPERATORS[c.operator], wit_value(c.value)) for c in conditions
        ]
        found = _record_call(wit_records.query, wit_records.Filter(entity, list(columns), wanted, top))
        return [entity_of(e) for e in found]

    def trace(self, message: str) -> None:
        wit_tracing.trace(message)

    def unsecure_config(self):
        return wit_config.unsecure()

    def secure_config(self):
        return wit_config.secure()


def handler_class(execute: Callable[[Context], Output]) -> type:
    """The `Handler` componentize-py exports: runs `execute` and reports how it ended.
    A `BusinessError` fails the job; any other exception is a transient error that
    keeps its type and message (never a bare trap)."""

    class Handler(exports.Handler):
        def execute(self, context: wit_context.ExecutionContext) -> wit_handler.Output:
            host.use(SluiceHost())
            try:
                output = execute(context_of(context))
                if output is None:
                    output = Output()
                if not isinstance(output, Output):
                    raise TypeError(f"a plug-in returns an Output, not {type(output).__name__}")
                return wit_handler.Output(
                    wit_attributes(output.output_parameters), wit_attributes(output.shared_variables)
                )
            except BusinessError as e:
                raise Err(wit_handler.PluginError_Business(str(e))) from None
            except TransientError as e:
                raise Err(wit_handler.PluginError_Transient(str(e))) from None
            except Exception as e:  # noqa: BLE001 - every failure becomes a job error
                raise Err(wit_handler.PluginError_Transient(describe(e))) from None

    return Handler
