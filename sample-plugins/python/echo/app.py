"""Returns its input parameters as output parameters: the smallest useful plug-in (the
Python twin of sample-plugins/echo)."""

from sluice_sdk import Output, plugin


@plugin
def execute(ctx):
    return Output(ctx.input_parameters)
