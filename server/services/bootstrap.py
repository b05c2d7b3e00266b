"""First start of a county server: keys, the first admin account, the built-in instruments."""

from __future__ import annotations

from dataclasses import dataclass, field

from server.services import auth
from server.services import forms as form_service
from server.services.access import COUNTY_ADMIN
from server.services.context import ServiceContext
from server.storage import forms as form_store


@dataclass(frozen=True)
class StartReport:
    """What :func:`prepare` did. ``admin_password`` is set only when the admin was just created."""

    admin_username: str
    admin_password: str | None
    keys_created: bool
    key_id: str
    published_forms: list[tuple[str, int]] = field(default_factory=list)

    @property
    def first_start(self) -> bool:
        """True when this start created the admin account."""
        return self.admin_password is not None


def prepare(ctx: ServiceContext) -> StartReport:
    """Make the current app ready to serve (idempotent; schema migrations already ran).

    On a fresh database: generates the server keys (if the key folder is empty), creates a county
    admin with a random password, and publishes the built-in instruments (if that setting is
    on). On later starts it changes nothing and never recreates the admin.
    """
    config = ctx.settings
    ring, keys_created = ctx.keys.load_or_create()
    username = config["ADMIN_USERNAME"]
    password: str | None = None
    if not auth.has_users():
        password = auth.new_password()
        auth.create_user(
            username=username,
            password=password,
            role=COUNTY_ADMIN,
            area_prefix=config["COUNTY_CODE"],
            actor="setup",
            display_name="County admin",
        )
    published: list[tuple[str, int]] = []
    if config["PUBLISH_BUILTIN_FORMS"] and form_store.count_forms() == 0:
        published = form_service.publish_builtins()
    return StartReport(username, password, keys_created, ring.current_id, published)
