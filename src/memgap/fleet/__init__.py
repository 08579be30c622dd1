"""Studies across many machines on a Ray cluster: one matrix, one store, one run per
machine at a time.

Ray does the scheduling, the transport and the fault detection; memgap adds only what
a study needs on top:

- ``nodes``: which Ray nodes are memgap nodes (they declare the custom resource
  ``memgap_slot: 1``) and the host each one is in the study (its ``memgap-host`` label,
  else its hostname). The host is an axis of the plan (``memgap.matrix``).
- ``task``: what runs on a node, inside a Ray task that holds the node's one slot: the
  checks before the study (engine, model and its digest, environment), the cooldown and
  the page-cache action before each run, and ``memgap.runner.perform_run``; the outcome
  comes back as plain JSON-able data through Ray's object store.
- ``driver``: the plan per host (randomized blocks on each), one run in flight per host,
  each finished run committed by the driver alone, in its own transaction, with the
  study's bookkeeping (``memgap.study``), so ``--resume`` after a killed driver loses and
  doubles nothing.
- ``faults``: Ray's errors for a node that died under a run, mapped to the cause
  ``node lost`` (the run is stored as failed, and retried once on another node of the
  same host when ``[cluster] retry_lost`` says so).

Ray is optional (``pip install memgap[fleet]``): only ``memgap run --ray`` imports this
package."""

from __future__ import annotations

SLOT_RESOURCE = "memgap_slot"  # each memgap node declares one: one run per machine at a time
HOST_LABEL = "memgap-host"  # a node's name in a study; its hostname when unlabelled
