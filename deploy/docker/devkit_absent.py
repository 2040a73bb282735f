"""`stream.devkit` in the runtime image: a one-line error instead of the devkit.

The runtime target of the Dockerfile installs the package without `stream/devkit` and puts
this file in its place as `stream/devkit/__init__.py`. Nothing the runtime runs imports the
devkit, so only a devkit command (`stream upstream`, `stream stack`, `stream demo`) gets
here: it exits with the reason on stderr rather than a ModuleNotFoundError traceback.
"""

import sys

USAGE_ERROR = 2
"""The exit code `stream` gives an unknown command: this one is unknown to this image."""

_command = sys.argv[1] if len(sys.argv) > 1 else "devkit"
print(
    f"stream {_command}: not in this image, which leaves out the devkit (reference upstream, "
    "dev-stack, demo); build the Dockerfile's `devkit` target for it",
    file=sys.stderr,
)
raise SystemExit(USAGE_ERROR)
