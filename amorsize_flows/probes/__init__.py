"""What the operating system says: /proc and cgroup files, clocks, run queues, collector pauses,
native thread pools, and whether this process may fork.

Imports only the standard library, ``data`` and (lazily) threadpoolctl and psutil.
"""
