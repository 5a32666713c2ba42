"""`sluice-py build APP.py -o APP.wasm`: builds a plug-in with componentize-py against
Sluice's WIT world (shipped in this package), the SDK on the module path."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

WIT = Path(__file__).parent / "wit"


def command(app: Path, output: Path) -> list[str]:
    """The componentize-py command that builds `app` into `output`."""
    componentize = shutil.which("componentize-py") or str(Path(sys.executable).parent / "componentize-py")
    sdk_root = Path(__file__).resolve().parent.parent
    return [
        componentize,
        "--wit-path", str(WIT),
        "--world", "plugin",
        "componentize",
        app.stem,
        "--python-path", str(app.resolve().parent),
        "--python-path", str(sdk_root),
        "--output", str(output),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sluice-py", description="Build Sluice plug-ins written in Python.")
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="build APP.py into a WebAssembly component")
    build.add_argument("app", type=Path, help="the module defining the @plugin function")
    build.add_argument("-o", "--output", type=Path, help="the component (default: APP.wasm)")
    args = parser.parse_args(argv)
    if not args.app.is_file():
        parser.error(f"{args.app} is not a file")
    output = args.output or args.app.with_suffix(".wasm")
    done = subprocess.run(command(args.app, output))
    if done.returncode == 0:
        print(f"built {output} ({output.stat().st_size:,} bytes); check it with: sluice plugin check {output}")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
