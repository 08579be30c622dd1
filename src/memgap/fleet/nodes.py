"""Which Ray nodes run memgap, and which host of the study each one is.

Pure: reads the node table as ``ray.nodes()`` returns it (one mapping per node, with
``NodeID``, ``Alive``, ``NodeManagerHostname``, ``NodeManagerAddress``, ``Resources`` and
``Labels``), so tests need no cluster."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from memgap.fleet import HOST_LABEL, SLOT_RESOURCE


@dataclass(frozen=True)
class FleetNode:
    node_id: str
    host: str  # the node's name in a study: its memgap-host label, else its hostname
    hostname: str
    address: str
    labels: Mapping[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        return f"{self.host} (node {self.node_id[:8]} at {self.address})"


def memgap_nodes(table: Sequence[Mapping[str, Any]]) -> list[FleetNode]:
    """The live nodes that declare a memgap slot, in node-id order (a fixed order, so the
    same cluster gives the same choices)."""
    out = []
    for n in table:
        if not n.get("Alive") or float((n.get("Resources") or {}).get(SLOT_RESOURCE, 0)) < 1:
            continue
        labels = {str(k): str(v) for k, v in (n.get("Labels") or {}).items()}
        hostname = str(n.get("NodeManagerHostname") or n.get("NodeManagerAddress") or n["NodeID"])
        out.append(FleetNode(node_id=str(n["NodeID"]), host=labels.get(HOST_LABEL) or hostname,
                             hostname=hostname, address=str(n.get("NodeManagerAddress") or "?"), labels=labels))
    return sorted(out, key=lambda n: n.node_id)


def study_hosts(nodes: Sequence[FleetNode]) -> list[str]:
    """Every host the memgap nodes make, sorted: the host axis of a study naming none."""
    return sorted({n.host for n in nodes})


def nodes_of(nodes: Sequence[FleetNode], host: str) -> list[FleetNode]:
    """The nodes that can run a host's cells: those whose label or hostname is ``host``
    (several nodes with one label are interchangeable; the driver runs one at a time)."""
    return [n for n in nodes if host in (n.host, n.hostname)]
