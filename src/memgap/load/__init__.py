"""OpenAI-compatible streaming load: workload specs (``load.spec``), the client
(``load.client``), per-request records and the summary derived from them
(``load.records``), service-level objectives (``load.slo``).

Import the module you use: this package's ``__init__`` imports nothing, so reading stored
requests or an SLO (``memgap.analysis``) never loads the HTTP client."""
