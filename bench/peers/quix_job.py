"""The job written with Quix Streams: a StreamingDataFrame that decodes and parses, then a
BatchingSink that stores each checkpoint's records with one unordered `insert_many`.

`python -m bench.peers.quix_job BOOTSTRAP TOPIC GROUP MONGO_URL DB COLLECTION`, run with
the Quix venv's python (bench/peers/venvs.py). Quix's own order at every checkpoint:
flush the sinks (our `write`, once per partition batch), then commit the offsets; a write
that raises aborts the checkpoint and the records are processed again. At-least-once, the
library's default guarantee. It stops on SIGTERM (Quix installs the handler).

Settings differing from Quix's defaults, and why:
- `commit_interval=1.0` (default 5 s): a checkpoint, so a sink batch and a commit, every
  second, like arroyo's ONCE_PER_SECOND; 5 s would add up to 5 s of idle tail to a run
  timed until everything is committed, and batches bigger than `stream run` ever writes.
- `auto_offset_reset="earliest"`: the backlog is already there when the job starts.
- `value_deserializer="bytes"`: the record value reaches `decode_sms` as `stream run`
  gets it, so both pay for the same decode (Quix's "json" would decode it a second time).
- `state_dir` under /tmp: the job keeps no state, but Quix creates the directory anyway.
"""

from __future__ import annotations

import sys
import tempfile
from datetime import UTC, datetime

from quixstreams import Application
from quixstreams.sinks import BatchingSink, SinkBatch

from bench.peers.common import decoded, document, open_collection, parse_args, write_unordered

__all__ = ["MongoBatchSink", "main"]

COMMIT_INTERVAL_S = 1.0
"""A checkpoint (sink write + commit) a second, as arroyo's ONCE_PER_SECOND commits."""


class MongoBatchSink(BatchingSink):
    """One unordered insert_many per topic-partition batch, when Quix checkpoints."""

    def __init__(self, url: str, db: str, name: str) -> None:
        super().__init__()
        self._url, self._db, self._name = url, db, name

    def setup(self) -> None:
        """Called by `Application.run` before consuming: connect once."""
        self._client, self._collection = open_collection(self._url, self._db, self._name)
        self._client.admin.command("ping")

    def write(self, batch: SinkBatch) -> None:
        now = datetime.now(UTC)
        documents = [
            document(item.value, "quix", now, batch.topic, batch.partition, item.offset)
            for item in batch
        ]
        write_unordered(self._collection, documents)


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="quix-state-") as state_dir:
        app = Application(
            broker_address=args.bootstrap,
            consumer_group=args.group,
            auto_offset_reset="earliest",
            commit_interval=COMMIT_INTERVAL_S,
            state_dir=state_dir,
            loglevel="WARNING",
        )
        topic = app.topic(args.topic, value_deserializer="bytes")
        sdf = app.dataframe(topic)
        sdf = sdf.apply(decoded)
        sdf.sink(MongoBatchSink(args.mongo_url, args.db, args.collection))
        app.run()


if __name__ == "__main__":
    main(sys.argv[1:])
