"""Background jobs, all on one lifecycle (lifecycle.py): claim, heartbeat while running, finish or fail.

One module per kind of work holds its run function and the RQ entrypoint that hands it to the lifecycle:
``inventory`` (the import), ``waves`` (a wave's batch and the member sweep), ``sweep`` (the periodic sweep of
everything whose heartbeat stopped); ``chain`` is the self-renewing schedule both periodic chains use. Jobs are
queued by these dotted names (soa.jobs), so a moved entrypoint keeps its old name importable for a release.
"""
