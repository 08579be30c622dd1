"""The analysis layer: everything memgap derives from the results store, and nothing that
runs an engine. Explain (the answer and its verdicts), the memory ledger, the comparison
statistics and the metric catalogue, a study's outcome, a sweep's curves and knees, the
quality checks and the selection of run sets all read stored records and series only;
``memgap.report`` renders what they return. Nothing here imports the runner, the
environments, the engines' launch code or the load client (tests/unit/test_import_direction.py)."""
