"""What was measured: the worker's limits, the machine's costs, the dry run of the function (and
its GIL probe), what a fresh worker pays to load it, and what a run cost.

Imports ``data`` and ``probes`` only.
"""
