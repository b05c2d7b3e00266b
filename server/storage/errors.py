"""The errors storage raises, so that services can handle them without knowing SQLAlchemy.

Every database error passes through :func:`translate` (an engine ``handle_error`` hook installed
by ``server.storage.database``) and comes out as one of the classes below. Each is *also* the
SQLAlchemy class it replaces (``StorageBusy`` is an ``OperationalError`` …), so the pool's own
disconnect handling and the app's last-resort handlers keep working unchanged.
"""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import ExceptionContext

#: What SQLite and PostgreSQL say (lower-cased) when a transaction lost a race for a lock and may simply be retried.
BUSY_MARKERS: Final = (
    "database is locked",
    "database table is locked",
    "could not serialize access",
    "deadlock detected",
    "lock timeout",
)


class StorageError(Exception):
    """Something the database refused or could not do; the transaction is rolled back."""


class StorageBusy(StorageError, sa_exc.OperationalError):
    """The database is busy (a lock, a serialization failure) or its connection was lost: the
    same work may succeed when tried again a moment later."""


class StorageUnavailable(StorageError, sa_exc.OperationalError):
    """The database cannot be used (unreachable, full, corrupt); trying again will not help
    until an operator acts."""


class ConstraintViolation(StorageError, sa_exc.IntegrityError):
    """A constraint refused the write (a missing referenced row, a NULL where none may be)."""


class Duplicate(ConstraintViolation):
    """A row with the same key exists (a unique or primary-key constraint refused the write)."""


class StorageFault(StorageError, sa_exc.DBAPIError):
    """Any other database error (a value the column cannot hold, a bug in a query)."""


class Missing(StorageError, LookupError):
    """A row an update names is not there (deleted meanwhile, or never was)."""


def is_busy(exc: BaseException) -> bool:
    """True when a database error means "busy, try again" rather than a bug.

    A connection the database closed under the request (PostgreSQL restarted, the backend
    terminated) counts too: SQLAlchemy invalidates it and the next checkout gets a fresh one.
    """
    if getattr(exc, "connection_invalidated", False):
        return True
    text = str(getattr(exc, "orig", exc)).lower()
    return any(marker in text for marker in BUSY_MARKERS)


def translate(context: ExceptionContext) -> sa_exc.DBAPIError | None:
    """The storage error to raise instead of SQLAlchemy's (``handle_error`` hook)."""
    raised = context.sqlalchemy_exception
    if context.is_pre_ping:
        return None  # the pool's liveness check handles its own errors (it reconnects)
    if not isinstance(raised, sa_exc.DBAPIError) or isinstance(raised, StorageError):
        return None
    cls: type[sa_exc.DBAPIError]
    if isinstance(raised, sa_exc.IntegrityError):
        text = str(raised.orig).lower()
        unique = "unique constraint" in text or "duplicate key" in text
        cls = Duplicate if unique else ConstraintViolation
    elif isinstance(raised, sa_exc.OperationalError):
        cls = StorageBusy if is_busy(raised) else StorageUnavailable
    else:
        cls = StorageFault
    args: dict[str, Any] = {
        "hide_parameters": raised.hide_parameters,
        "connection_invalidated": raised.connection_invalidated,
        "ismulti": raised.ismulti,
    }
    return cls(raised.statement, raised.params, raised.orig, **args)
