"""Example pipelines built on amorsize-flows (need the `examples` extra: scikit-learn)."""
