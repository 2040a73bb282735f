"""`stream run` under pyinstrument, for the bench's `profile` scenario.

`python -m bench.profiled OUT_DIR` runs the real `stream run` entry point (settings from the
STREAM_* environment, stopped by SIGTERM) with a sampling profiler on the main thread, and
on exit writes to OUT_DIR: profile.html (the interactive tree), profile.txt (the call tree
as text) and profile.json (self time by library and the top functions, for the summary).
Sampling every 1 ms costs a few per cent; asyncio's idle wait shows as `selectors.select`.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

from pyinstrument import Profiler
from pyinstrument.frame import Frame

from stream import app

INTERVAL_S = 0.001
TOP_FUNCTIONS = 15

_LIBRARIES = ("aiokafka", "pymongo", "bson", "prometheus_client", "orjson", "httpx")


IDLE = "idle (waiting for I/O)"
_IDLE_FUNCTIONS = frozenset(("epoll.poll", "select.select", "poll.poll"))


def library(frame: Frame, parent: str) -> str:
    """Which bucket a frame's self time goes to: a module of ours, a package, asyncio, idle.

    A built-in (a C function, no file) counts for whoever called it: `Pattern.search` in
    the parser is the parser's time, `socket.send` in asyncio is asyncio's.
    """
    path = frame.file_path or ""
    if frame.function in _IDLE_FUNCTIONS or path.endswith("/selectors.py"):
        return IDLE
    if path.startswith("<"):
        return parent
    parts = Path(path).parts
    if "site-packages" not in parts and "stream" in parts:
        return f"stream.{Path(path).stem}"
    for name in _LIBRARIES:
        if name in parts:
            return name
    return "asyncio" if "asyncio" in parts else "other"


def summarise(root: Frame) -> dict[str, object]:
    """Self time by library and the functions with the most self time, in seconds."""
    by_library: defaultdict[str, float] = defaultdict(float)
    by_function: defaultdict[str, float] = defaultdict(float)
    stack = [(root, "other")]
    while stack:
        frame, parent = stack.pop()
        if frame.is_synthetic:
            continue
        bucket = library(frame, parent)
        stack.extend((child, bucket) for child in frame.children)
        own = frame.total_self_time
        by_library[bucket] += own
        by_function[f"{frame.function} ({frame.file_path_short}:{frame.line_no})"] += own
    return {
        "total_s": root.time,
        "by_library": dict(sorted(by_library.items(), key=lambda item: -item[1])),
        "top_functions": sorted(by_function.items(), key=lambda item: -item[1])[:TOP_FUNCTIONS],
    }


def main(out_dir: Path) -> int:
    profiler = Profiler(interval=INTERVAL_S, async_mode="disabled")
    profiler.start()
    try:
        code = app.main([])
    finally:
        session = profiler.stop()
        (out_dir / "profile.html").write_text(profiler.output_html())
        (out_dir / "profile.txt").write_text(profiler.output_text(unicode=True, color=False))
        root = session.root_frame()
        if root is not None:
            (out_dir / "profile.json").write_text(json.dumps(summarise(root), indent=1))
    return code


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
