"""Benchmarks of amorsize-flows against a plain loop, its peers and hand-tuned configurations.

``python -m benchmarks.run_core`` runs the core benchmark; see ``benchmarks/README.md``.
"""
