"""pnyx.runtime: run any sans-IO node for real — asyncio, TCP framing, a durable WAL, metrics.

The runtime owns the world that protocols never touch: sockets, files, fsync, clocks.
:class:`~pnyx.runtime.node_runner.NodeRunner` drives one node through the core contract
(``persist`` → WAL + fsync, ``send`` → TCP, ``apply`` → state machine and client replies,
``tick`` → a timer).  See ``docs/RUNTIME.md`` for the on-disk and on-wire formats.
"""

from pnyx.runtime.client import FramedClient
from pnyx.runtime.framing import (
    FRAME_VERSION,
    FrameDecoder,
    RemoteProtocolError,
    encode_frame,
)
from pnyx.runtime.logs import configure_logging
from pnyx.runtime.metrics import MetricsServer, NodeMetrics
from pnyx.runtime.node_runner import (
    NodeFailed,
    NodeRunner,
    RunnerConfig,
    bind_listen_socket,
    run_event_loop,
)
from pnyx.runtime.snapshots import SnapshotCorruptError, SnapshotRef, SnapshotStore
from pnyx.runtime.transport import Hello, Transport, TransportConfig, Welcome
from pnyx.runtime.wal import (
    MemoryLog,
    OpCodec,
    PersistCodec,
    WalConfig,
    WalCorruptError,
    WalDecodeError,
    WalError,
    WriteAheadLog,
)

__all__ = [
    "FRAME_VERSION",
    "FrameDecoder",
    "FramedClient",
    "Hello",
    "MemoryLog",
    "MetricsServer",
    "NodeFailed",
    "NodeMetrics",
    "NodeRunner",
    "OpCodec",
    "PersistCodec",
    "RemoteProtocolError",
    "RunnerConfig",
    "SnapshotCorruptError",
    "SnapshotRef",
    "SnapshotStore",
    "Transport",
    "TransportConfig",
    "WalConfig",
    "WalCorruptError",
    "WalDecodeError",
    "WalError",
    "Welcome",
    "WriteAheadLog",
    "bind_listen_socket",
    "configure_logging",
    "encode_frame",
    "run_event_loop",
]
