"""A flow whose one stage maps until it is cancelled; every call notes which process ran it."""

from __future__ import annotations

import functools
import os

from prefect import flow

from amorsize_flows.prefect import amorsize_task
from tests.workloads import busy_noting_pids


@flow(name="endless-stage")
def endless_stage() -> None:
    noting = functools.partial(busy_noting_pids, log_path=os.environ["AMORSIZE_TEST_PIDS_FILE"])
    stage = amorsize_task(noting, backend="processes", n_jobs=2).with_options(name="endless")
    stage([0.05] * 100_000)
