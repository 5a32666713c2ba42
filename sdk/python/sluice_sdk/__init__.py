"""Write Sluice plug-ins in Python.

```python
from sluice_sdk import BusinessError, Output, plugin, records, trace

@plugin
def execute(ctx):
    if ctx.record_id is None:
        raise BusinessError("this step runs on a record")
    trace(f"numbering {ctx.record_id}")
    records.update("account", ctx.record_id, {"accountnumber": "ACC-1"})
    return Output(accountnumber="ACC-1")
```

Build it with `sluice-py build app.py -o app.wasm` (componentize-py, pinned), test it with
`sluice_sdk.testing.run` under pytest, and run it in the real sandbox with
`sluice plugin run app.wasm --input context.json`.
"""

import importlib.util
import sys
from typing import Callable

from .context import (
    BusinessError,
    Context,
    InvalidRecordCall,
    Output,
    PluginError,
    RecordError,
    RecordNotFound,
    TransientError,
)
from .host import Condition, config, records, trace
from .values import Decimal, Entity, EntityReference, Money, OptionSet

__all__ = [
    "BusinessError",
    "Condition",
    "Context",
    "Decimal",
    "Entity",
    "EntityReference",
    "InvalidRecordCall",
    "Money",
    "OptionSet",
    "Output",
    "PluginError",
    "RecordError",
    "RecordNotFound",
    "TransientError",
    "config",
    "plugin",
    "records",
    "trace",
]


def plugin(execute: Callable[[Context], Output]) -> Callable[[Context], Output]:
    """Marks the plug-in's entry point. While componentize-py builds the plug-in, it also
    defines the module's `Handler` (the component's export); elsewhere (tests, the local
    harness) the function is returned as it is."""
    if importlib.util.find_spec("wit_world") is not None:
        from .component import handler_class

        sys.modules[execute.__module__].Handler = handler_class(execute)
    execute.__sluice_plugin__ = True
    return execute
