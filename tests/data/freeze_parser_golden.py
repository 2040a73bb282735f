"""Freeze the builtin parser's outputs into parser_golden.jsonl.

Run once (`.venv/bin/python tests/data/freeze_parser_golden.py`) on the parser that a rewrite
must reproduce; tests/test_parser.py then holds every later parser to these outputs, field
for field. The inputs are stored beside the outputs, so the file does not depend on the
generators staying the same:

- "labelled": every SMS of sms_labelled.jsonl;
- "unseen": synthetic SMS from a seed the parser was never looked at with, standing in for
  held-out real SMS, which are not in the repository;
- "variant": each labelled SMS upper-cased, cut in half, glued to the next one, and sent
  from a person's number or no sender, to reach branches the clean texts do not.

An SMS that comes up twice is kept once, under its first set.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from stream.sms.parser import parse_sms
from stream.tools.synthetic import synthetic_sms

DATA = Path(__file__).parent
UNSEEN_SEED = 20240512  # never used while the parser was written or tuned
UNSEEN_COUNT = 1000
PERSONAL = "+447700900123"


def _inputs() -> list[tuple[str, str, str]]:
    labelled = [
        json.loads(line)
        for line in (DATA / "sms_labelled.jsonl").read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    rows = [("labelled", row["sender"], row["body"]) for row in labelled]
    rows += [
        ("unseen", str(sms["sender"]), str(sms["body"]))
        for sms in synthetic_sms(random.Random(UNSEEN_SEED), count=UNSEEN_COUNT)
    ]
    for i, row in enumerate(labelled):
        body, sender = row["body"], row["sender"]
        following = labelled[(i + 1) % len(labelled)]["body"]
        rows += [
            ("variant", sender, body.upper()),
            ("variant", PERSONAL, body[: len(body) // 2]),
            ("variant", "" if i % 2 else PERSONAL, f"{body} {following}"),
        ]
    once: dict[tuple[str, str], str] = {}
    for kind, sender, body in rows:
        once.setdefault((sender, body), kind)
    return [(kind, sender, body) for (sender, body), kind in once.items()]


def _frozen(result: dict[str, Any]) -> dict[str, Any]:
    """The result without its None fields: the test puts them back from RESULT_KEYS."""
    return {key: value for key, value in result.items() if value is not None}


def main() -> None:
    rows = [
        {"set": kind, "sender": sender, "body": body, "result": _frozen(parse_sms(body, sender))}
        for kind, sender, body in _inputs()
    ]
    lines = [json.dumps(row, ensure_ascii=False) for row in rows]
    (DATA / "parser_golden.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{len(lines)} results frozen")


if __name__ == "__main__":
    main()
