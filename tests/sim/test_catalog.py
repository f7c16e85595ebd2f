"""Every protocol name the catalog lists resolves to its spec (a registration pointing at a
missing module or attribute fails here, not at a user's ``pnyx sim``)."""

from __future__ import annotations

import pytest

from pnyx.catalog import get_protocol, protocol_names
from pnyx.sim.spec import ProtocolDef


@pytest.mark.parametrize("name", protocol_names())
def test_every_listed_protocol_resolves_to_its_spec(name: str) -> None:
    spec = get_protocol(name)
    assert isinstance(spec, ProtocolDef)
    # a deliberately broken variant says so (the simulator expects to catch it)
    assert spec.broken == name.endswith("-broken"), (name, spec.broken)


def test_an_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(KeyError, match=r"valid: .*raft"):
        get_protocol("no-such-protocol")
