"""Tries what a hostile plug-in would: read the host's files, list its root, read its
environment, open a socket. Reports each attempt (the tests check every one is refused,
or finds nothing), so a standard library's WASI imports are shown to reach nothing."""

import os
import socket

from sluice_sdk import Output, plugin


def attempt(action):
    try:
        return f"allowed: {action()!r}"[:120]
    except BaseException as e:  # noqa: BLE001 - what failed is the finding
        return f"refused: {type(e).__name__}"


@plugin
def execute(ctx):
    return Output(
        file=attempt(lambda: open("/etc/passwd").read(16)),
        listing=attempt(lambda: os.listdir("/")),
        environment=attempt(lambda: dict(os.environ)),
        socket=attempt(lambda: socket.create_connection(("127.0.0.1", 7878), timeout=1)),
        tcp=attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM).connect(("127.0.0.1", 7878))),
        lookup=attempt(lambda: socket.getaddrinfo("localhost", 80)),
    )
