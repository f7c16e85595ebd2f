"""``pnyx etcd kv|lease|lock|elect``: clients of the etcd v3 API, grouped.

``pnyx kv`` is the plain Raft KV client (:mod:`pnyx.cli.kv_cmd`), so the etcd KV commands
live under ``pnyx etcd kv``; ``pnyx lease``, ``pnyx lock`` and ``pnyx elect`` are the same
commands as ``pnyx etcd lease|lock|elect``.
"""

from __future__ import annotations

import click

from pnyx.cli.elect_cmd import elect
from pnyx.cli.etcd_kv_cmd import kv
from pnyx.cli.lease_cmd import lease
from pnyx.cli.lock_cmd import lock


@click.group()
def etcd() -> None:
    """etcd v3 API clients: kv (put/get/del/watch/txn), lease, lock, elect.

    Endpoints: --endpoints, else $ETCDCTL_ENDPOINTS (printed by `pnyx cluster up
    --protocol etcd`), else 127.0.0.1:2379."""


etcd.add_command(kv)
etcd.add_command(lease)
etcd.add_command(lock)
etcd.add_command(elect)
