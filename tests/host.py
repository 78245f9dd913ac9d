"""What the virtual machine's host did to the tests: CPU time it took away."""

from __future__ import annotations

import psutil


def stolen_seconds() -> float:
    """CPU seconds the hypervisor has run something else on this machine's CPUs since boot, all
    CPUs together (Linux's steal time, counted in 10 ms ticks; 0.0 where not reported). A thread
    loses that time without its CPU clock or its run queue showing it: it reads as waiting."""
    return float(getattr(psutil.cpu_times(), "steal", 0.0))
