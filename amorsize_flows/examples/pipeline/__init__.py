"""The retraining pipeline's stages, shared by the Airflow DAG and the Prefect flow.

A day of the pipeline, each step a module of one job:

    ingest     new batch files (CSV, Parquet) -> checked, deduplicated, appended to the store
    drift      the new rows against the rows the champion was trained on: retrain or not
    features   a versioned transformation, computed once per row and version (a mapped stage)
    split      stratified 70/15/15
    models     model families, Optuna trials asked in batches, each trial 5-fold CV (mapped)
    ensembles  the best of each family refitted (mapped), then voting and stacking
    evaluation the full metric set on the validation and test splits
    registry   MLflow on a local SQLite store: runs, plans, model versions, champion, rollback

Every function of one item (a row, a trial, a family) is importable from here, so that worker
processes of any start method can load it.
"""
