"""Where the issue-17 producers meet the task service: the round-over-round alerts hand their
signals to :func:`server.services.tasks.open_tasks` bound to the caller, and the 动态清零 board
reads the outcomes of worked verification tasks for its false-positive rates.
"""

from __future__ import annotations

from collections.abc import Iterable

from server.services import tasks
from server.services.access import Actor
from server.services.context import ServiceContext
from server.services.task_reasons import TaskOutcome, TaskSink


def task_sink(ctx: ServiceContext, actor: Actor) -> TaskSink:
    """The sink signals go to: ``open_tasks`` bound to ``ctx`` and ``actor`` (joining the
    caller's write transaction, so a run and its tasks commit together)."""
    return tasks.task_sink(ctx, actor)


def task_outcomes(area_prefix: str) -> Iterable[TaskOutcome]:
    """One :class:`TaskOutcome` per reason of every task under ``area_prefix`` that a village
    team has worked (its outcome recorded), closed or not."""
    return tasks.board_outcomes(area_prefix)
