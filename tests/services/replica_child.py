"""A replica of a ReplicatedCounter in its own process, driven by lines on stdin.

``python -m tests.services.replica_child ID MEMBERS_JSON DATA_DIR`` (from the repository
root).  Each command line gets one answer line on stdout:

- ``leader``: the leader this replica knows (0: none);
- ``incr``: the counter after a replicated ``incr(1)``, or ``error: ...``;
- ``stop``: ``stopped <seconds>`` (or ``error <seconds> ...``) for ``Replica.stop()``, then
  the process exits.  End of input stops the replica too.

Tests kill it with SIGKILL to crash a replica, and start it again on the same data dir.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from pnyx.services.objects import ReplicatedCounter
from pnyx.services.replicated import Replica, ReplicaError, ReplicaOptions

OPTIONS = ReplicaOptions(tick_ms=5, request_timeout_s=1.0, deadline_s=10.0, fsync=False)


def main(argv: list[str]) -> int:
    node_id, members_json, data_dir = int(argv[0]), argv[1], Path(argv[2])
    members = {int(k): (str(v[0]), int(v[1])) for k, v in json.loads(members_json).items()}
    counter = ReplicatedCounter()
    replica = Replica(counter, node_id, members, data_dir=data_dir, options=OPTIONS)
    replica.start()
    print("started", flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "leader":
            print(replica.leader_id or 0, flush=True)
        elif command == "incr":
            try:
                print(counter.incr(1), flush=True)
            except ReplicaError as exc:
                print(f"error: {exc}", flush=True)
        elif command == "stop":
            break
        else:
            print(f"error: unknown command {command!r}", flush=True)
    started = time.monotonic()
    try:
        replica.stop()
    except ReplicaError as exc:
        print(f"error {time.monotonic() - started:.3f} {exc}", flush=True)
        return 1
    print(f"stopped {time.monotonic() - started:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
