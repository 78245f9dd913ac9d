"""What was decided: the cost model, the guards around it, how a map is prepared (a stored plan,
a record, or a dry run), re-planning a serial map, trends along the input, records as evidence.

Pure of executors: imports ``data``, ``probes`` and ``measure`` only.
"""
