"""Which Ray nodes are memgap nodes, and their host in a study (over ray.nodes() as Ray 2.60 prints it)."""

from __future__ import annotations

from typing import Any

from memgap.fleet.nodes import memgap_nodes, nodes_of, study_hosts


def _node(node_id: str, *, alive: bool = True, slot: float | None = 1.0, label: str | None = None,
          hostname: str = "vm") -> dict[str, Any]:
    resources: dict[str, float] = {"CPU": 1.0, "object_store_memory": 81788928.0, "node:192.0.2.2": 1.0}
    if slot is not None:
        resources["memgap_slot"] = slot
    labels = {"ray.io/node-id": node_id}
    if label is not None:
        labels["memgap-host"] = label
    return {"NodeID": node_id, "Alive": alive, "NodeManagerHostname": hostname,
            "NodeManagerAddress": "192.0.2.2", "Resources": resources, "Labels": labels}


def test_only_live_nodes_with_a_slot_in_node_id_order() -> None:
    table = [_node("bb", label="node-b"), _node("aa", label="node-a"), _node("cc", slot=None),
             _node("dd", alive=False, label="node-d"), _node("ee", slot=0.0)]
    nodes = memgap_nodes(table)
    assert [(n.node_id, n.host) for n in nodes] == [("aa", "node-a"), ("bb", "node-b")]
    assert nodes[0].labels["memgap-host"] == "node-a" and nodes[0].address == "192.0.2.2"


def test_unlabelled_node_is_its_hostname_and_a_host_may_have_several_nodes() -> None:
    nodes = memgap_nodes([_node("a1", hostname="spark"), _node("b1", label="gh200", hostname="gpu-07"),
                          _node("b2", label="gh200", hostname="gpu-08")])
    assert study_hosts(nodes) == ["gh200", "spark"]
    assert [n.node_id for n in nodes_of(nodes, "gh200")] == ["b1", "b2"]
    assert [n.node_id for n in nodes_of(nodes, "gpu-08")] == ["b2"]  # a hostname names one node
    assert nodes_of(nodes, "h100") == []
    assert nodes[1].describe().startswith("gh200 (node b1 at 192.0.2.2")
