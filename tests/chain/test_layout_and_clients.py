"""Where the configuration process sits (one rule: ``RuntimeDef.config_node``, read by the
simulator's and the real processes' node factories and by the cluster layout), and
``pnyx sim chain|craq --clients N`` (their own fault schedule keeps the asked client count)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from pnyx.catalog import get_protocol
from pnyx.cli.main import cli
from pnyx.core import CLIENT_ID_BASE, DurableState
from pnyx.protocols.chain import ChainMaster, ChainNode
from pnyx.protocols.primary_backup.node import Server, ViewManager
from pnyx.services.schemes import config_node, data_nodes, process_count
from pnyx.sim.runner import SimConfig, run_sim
from pnyx.sim.spec import RuntimeDef

IDS = (1, 2, 3, 4)


def _runtime(name: str) -> RuntimeDef:
    runtime = get_protocol(name).runtime
    assert runtime is not None
    return runtime


# -- the configuration process ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "position", "config"),
    [("chain", "highest", 4), ("craq", "highest", 4), ("primary-backup", "lowest", 1)],
)
def test_the_runtime_definition_places_the_configuration_process(
    name: str, position: str, config: int
) -> None:
    runtime = _runtime(name)
    assert runtime.config_node == position
    assert runtime.config_id(IDS) == config
    assert config_node(name, IDS) == config  # the cluster layout reads the same field
    assert data_nodes(name, IDS) == tuple(i for i in IDS if i != config)
    assert process_count(name, 3) == 4


@pytest.mark.parametrize("name", ["raft", "dynamo", "etcd", "no-such-protocol"])
def test_protocols_without_a_configuration_process_use_every_process_for_data(name: str) -> None:
    assert config_node(name, IDS) is None
    assert data_nodes(name, IDS) == IDS
    assert process_count(name, 3) == 3


@pytest.mark.parametrize("name", ["chain", "craq"])
def test_chain_master_is_the_same_process_in_the_simulator_and_on_real_processes(
    name: str,
) -> None:
    spec = get_protocol(name)
    runtime = _runtime(name)
    assert runtime.make_node is not None
    for make_node in (spec.make_node, runtime.make_node):
        roles = {i: make_node(i, IDS, None, DurableState()) for i in IDS}  # type: ignore[arg-type]
        assert isinstance(roles[4], ChainMaster), make_node
        assert all(isinstance(roles[i], ChainNode) for i in (1, 2, 3)), make_node


def test_primary_backup_view_manager_is_the_lowest_id_on_real_processes() -> None:
    make_node = _runtime("primary-backup").make_node
    assert make_node is not None
    roles = {i: make_node(i, IDS, None, DurableState()) for i in IDS}  # type: ignore[arg-type]
    assert isinstance(roles[1], ViewManager)
    assert all(isinstance(roles[i], Server) for i in (2, 3, 4))


def test_an_unknown_position_is_refused_with_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"config_node='middle'; valid: none, lowest, highest"):
        RuntimeDef(peer_message_types=(), config_node="middle")  # type: ignore[arg-type]
    assert _runtime("chain").config_id(()) is None


# -- --clients with a protocol's own fault schedule ----------------------------------------------


@pytest.mark.parametrize(("name", "clients"), [("chain", 2), ("craq", 2), ("chain", 5)])
def test_clients_is_honoured_by_specs_that_draw_their_own_schedule(name: str, clients: int) -> None:
    spec = get_protocol(name)
    assert spec.draws_schedule and spec.default_clients != clients
    result = run_sim(spec, SimConfig(seed=3, clients=clients, faults=frozenset({"crash"})))
    assert result.ok, result.violation
    assert result.schedule.clients == clients
    processes = {event.process for event in result.history}
    assert processes == {CLIENT_ID_BASE + i for i in range(clients)}


@pytest.mark.parametrize("name", ["chain", "craq"])
def test_default_runs_are_unchanged_by_the_clients_option(name: str) -> None:
    """No --clients, and --clients equal to the default, replay the same trace."""
    spec = get_protocol(name)
    faults = frozenset({"crash", "partition", "drop"})
    default = run_sim(spec, SimConfig(seed=4, faults=faults, hash_trace=True))
    same = run_sim(
        spec, SimConfig(seed=4, clients=spec.default_clients, faults=faults, hash_trace=True)
    )
    assert default.schedule.clients == spec.default_clients
    assert default.trace_hash == same.trace_hash
    assert default.schedule.events == same.schedule.events


def test_cli_clients_changes_a_chain_run_and_its_replay_line_keeps_it() -> None:
    runner = CliRunner()
    args = ["sim", "craq", "--seed", "3", "--faults", "crash", "--json"]
    default = runner.invoke(cli, args)
    fewer = runner.invoke(cli, [*args, "--clients", "1"])
    assert default.exit_code == 0, default.output
    assert fewer.exit_code == 0, fewer.output
    one = json.loads(fewer.stdout)
    assert one["ok"] is True
    assert one["replay"].endswith("--clients 1")
    assert one["deliveries"] != json.loads(default.stdout)["deliveries"]
