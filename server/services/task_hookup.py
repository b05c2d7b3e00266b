"""PLACEHOLDER: where the issue-17 producers meet the task service of branch ``tasks``.

The round-over-round alerts hand their signals to a :class:`TaskSink`, and the 动态清零 board reads
closed tasks' outcomes for its false-positive rates. The task service (``server.services.tasks``)
is built on another branch at the same time, so this module is the one place that reaches for
it, lazily: until it is merged the sink keeps nothing (the findings stay stored with each round
run) and there are no outcomes. The coordinator connects both functions at merge.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable
from typing import Any

from server.services.task_reasons import HouseholdSignal, TaskSink

log = logging.getLogger(__name__)

#: The task service module this placeholder connects to once it exists.
TASK_SERVICE = "server.services.tasks"


def _no_task_service(signals: Iterable[HouseholdSignal], *, origin: str) -> None:
    count = sum(1 for _ in signals)
    log.warning(
        "no task service installed: %d household signals of %s not turned into tasks", count, origin
    )


def task_sink() -> TaskSink:
    """The sink signals go to: ``server.services.tasks.open_tasks`` once that module exists."""
    try:
        tasks = importlib.import_module(TASK_SERVICE)
    except ModuleNotFoundError:
        return _no_task_service
    sink: TaskSink = tasks.open_tasks
    return sink


def task_outcomes(area_prefix: str) -> Iterable[Any]:
    """Closed tasks' outcomes under ``area_prefix`` as ``server.services.board.TaskOutcome``
    rows (source, reason code, outcome code, village code); none until the task service exists.

    To connect: have the task service yield one row per (closed task, reason) and return it here.
    """
    try:
        tasks = importlib.import_module(TASK_SERVICE)
    except ModuleNotFoundError:
        return []
    outcomes = getattr(tasks, "board_outcomes", None)
    return [] if outcomes is None else outcomes(area_prefix)
