"""The ``pnyx`` command line: one group, each subcommand in its own module."""

from __future__ import annotations

import importlib

import click

# subcommand name -> "module:attribute" of a click command (imported lazily: fast startup)
_COMMANDS: dict[str, str] = {
    "sim": "pnyx.cli.sim_cmd:sim",
    "demo": "pnyx.cli.demo_cmd:demo",
    "check": "pnyx.cli.check_cmd:check",
    "serve": "pnyx.cli.serve_cmd:serve",
    "cluster": "pnyx.cli.cluster_cmd:cluster",
    "members": "pnyx.cli.members_cmd:members",
    "kv": "pnyx.cli.kv_cmd:kv",
    "etcd": "pnyx.cli.etcd_cmd:etcd",
    "lease": "pnyx.cli.lease_cmd:lease",
    "lock": "pnyx.cli.lock_cmd:lock",
    "elect": "pnyx.cli.elect_cmd:elect",
    "service-demo": "pnyx.cli.service_demo_cmd:service_demo",
    "test": "pnyx.cli.test_cmd:test",
    "crdt": "pnyx.cli.crdt_cmd:crdt",
    "consistency": "pnyx.cli.consistency_cmd:consistency",
    "txn": "pnyx.cli.txn_cmd:txn",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        command = getattr(importlib.import_module(module_name), attr)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=_LazyGroup)
@click.version_option(package_name="pnyx")
def cli() -> None:
    """pnyx: protocols as pure state machines — simulate, check, run, attack."""


def main() -> None:
    """Console-script entry point."""
    cli()


if __name__ == "__main__":
    main()
