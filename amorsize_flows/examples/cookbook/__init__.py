"""The original Amorsize guide's patterns as stage functions, each one ``amz.execute`` over the
items a user has: image files, audio clips, cross-validation folds, a grid or batches of Bayesian
trials, ensemble members, batches to predict. Each module makes its own real data (scikit-learn's
photographs and datasets, reproducibly generated audio and series), so that a test or a benchmark
can run it anywhere. Planner options (``max_workers``, ``backend``, ...) pass through to the map.
"""
