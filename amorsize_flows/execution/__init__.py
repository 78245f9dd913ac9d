"""How a plan runs: serial batches in the caller, thread and process pools behind one small
interface, the worker process's side, signals, progress, and the lazy map iterator.

Imports ``data``, ``probes``, ``measure`` and ``decide``; never the entry points above it.
"""
