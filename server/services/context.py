"""What a service needs from the running server, handed to it explicitly.

The app factory builds one :class:`ServiceContext` per app (``server.app.create_app``) and keeps
it in ``app.extensions``; views and commands fetch it and pass it on. Services therefore run
without Flask: a test, a job or a command line builds a context from settings and calls them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from server.services.keys import KeyService
from server.settings import resolve_key_dir
from server.storage.types import utcnow

#: The ``app.extensions`` key the app factory stores the context under.
EXTENSION_KEY: Final = "village_sync.services"


@dataclass(frozen=True)
class ServiceContext:
    """Settings (upper-case keys, ``server.settings``), the clock and the server's key ring.

    ``settings`` is the app's live configuration mapping (read, never written here), so a
    setting changed on a running test app is seen by the next call.
    """

    settings: Mapping[str, Any]
    keys: KeyService
    clock: Callable[[], datetime] = field(default=utcnow)

    @classmethod
    def of(cls, settings: Mapping[str, Any]) -> ServiceContext:
        """The context of a server configured by ``settings``."""
        return cls(settings=settings, keys=KeyService(resolve_key_dir(settings)))

    def now(self) -> datetime:
        """The current time, aware, in UTC."""
        return self.clock()
