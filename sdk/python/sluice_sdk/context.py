"""What a plug-in receives and returns, and how it fails."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from .values import Attributes, Entity, Value, check


@dataclass
class Context:
    """The execution context of one run (Dataverse's IPluginExecutionContext)."""

    message: str
    entity: str
    org_id: str = "local"
    user_id: str = "local"
    record_id: Optional[str] = None
    stage: str = "post-operation"
    """`pre-validation`, `pre-operation` or `post-operation`."""
    mode: str = "asynchronous"
    """`synchronous` or `asynchronous`."""
    depth: int = 1
    correlation_id: str = ""
    input_parameters: Attributes = field(default_factory=dict)
    target: Optional[Entity] = None
    """The record being written, as the caller sent it (Create, Update)."""
    pre_image: Optional[Entity] = None
    post_image: Optional[Entity] = None
    shared_variables: Attributes = field(default_factory=dict)

    @property
    def record(self) -> Optional[Entity]:
        """The record the step is about, as Dataverse hands it: before the operation
        (pre-validation, pre-operation) the Target, the attributes being written; after
        it, the post-image (the whole record), or the Target when there is none."""
        if self.stage == "post-operation":
            return self.post_image or self.target
        return self.target


class Output:
    """What a successful run returns: output parameters and shared variables.

    `Output(accountnumber="ACC-1")` sets output parameters by keyword;
    `Output().set("a", 1).share("b", 2)` builds one step by step.
    """

    def __init__(self, parameters: Optional[Attributes] = None, /, **named: Value):
        self.output_parameters: Attributes = {}
        self.shared_variables: Attributes = {}
        for name, value in {**(parameters or {}), **named}.items():
            self.set(name, value)

    def set(self, name: str, value: Value) -> "Output":
        self.output_parameters[name] = check(value)
        return self

    def share(self, name: str, value: Value) -> "Output":
        """Passes a value on to later steps of the same event or workflow."""
        self.shared_variables[name] = check(value)
        return self

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Output)
            and self.output_parameters == other.output_parameters
            and self.shared_variables == other.shared_variables
        )

    def __repr__(self) -> str:
        return f"Output({self.output_parameters!r}, shared={self.shared_variables!r})"


class PluginError(Exception):
    """A failure the plug-in reports on purpose."""


class BusinessError(PluginError):
    """A business rule failed: the job fails at once, is never retried, and the message
    reaches the caller (Dataverse's InvalidPluginExecutionException)."""


class TransientError(PluginError):
    """Something that may succeed later: the job is retried. Any other exception a
    plug-in raises is reported as one, with its type and message."""


class RecordError(Exception):
    """A record call the host refused."""


class RecordNotFound(RecordError):
    """No such record in this organisation."""


class InvalidRecordCall(RecordError):
    """The call was malformed (an empty entity name, a bad attribute, ...)."""


def describe(error: BaseException) -> str:
    """How an unexpected exception reads in the job's error: its type and message."""
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
