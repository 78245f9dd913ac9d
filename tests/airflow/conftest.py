"""Real Airflow 3 for the tests: a temporary AIRFLOW_HOME, a SQLite metadata DB, dag.test().

Airflow reads its configuration at import, so the environment is set here, before anything
imports it. The DAG files (the test DAGs and the example retraining DAG) are copied into a
temporary dags folder, because dag.test() runs only DAGs found there.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HOME = Path(tempfile.mkdtemp(prefix="amorsize-airflow-home-"))
DAGS = HOME / "dags"
DAGS.mkdir()
for source in [*(Path(__file__).parent / "dags").glob("*.py"), *(REPO / "dags").glob("*.py")]:
    shutil.copy(source, DAGS / source.name)

os.environ["AIRFLOW_HOME"] = str(HOME)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(DAGS)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{HOME / 'airflow.db'}"
os.environ["AMORSIZE_EXAMPLE_OUTPUT"] = str(HOME / "retraining-output")
# Large XComs in object storage (a folder here), as a deployment keeps them: the 6 MB of features
# of the example DAG and the large-results test's 3 MB go there, a reference stays in the DB.
XCOM_STORAGE = HOME / "xcom-storage"
os.environ["AIRFLOW__CORE__XCOM_BACKEND"] = (
    "airflow.providers.common.io.xcom.backend.XComObjectStorageBackend"
)
os.environ["AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_PATH"] = f"file://{XCOM_STORAGE}"
os.environ["AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_THRESHOLD"] = str(1 << 20)

pytest.importorskip("airflow")


@pytest.fixture(scope="session")
def dagbag():
    """A fresh metadata DB and every DAG in the temporary dags folder."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils import db

    db.resetdb()
    bag = DagBag(str(DAGS))
    assert not bag.import_errors, bag.import_errors
    return bag


@pytest.fixture(scope="session")
def xcoms():
    """Read every XCom a DAG run pushed, as {(task_id, key): value}."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    def read(dag_run) -> dict[tuple[str, str], object]:
        with create_session() as session:
            rows = (
                session.query(XComModel)
                .filter(XComModel.dag_id == dag_run.dag_id, XComModel.run_id == dag_run.run_id)
                .all()
            )
            return {(row.task_id, row.key): row.value for row in rows}

    return read
