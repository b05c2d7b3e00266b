"""Flask extensions, created unbound at import and bound to an app in ``create_app``."""

from __future__ import annotations

from flask_sqlalchemy import SQLAlchemy

from server.storage.models import Base

#: The one SQLAlchemy handle. Only ``server.storage`` modules may use its session.
db = SQLAlchemy(model_class=Base)
