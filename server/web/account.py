"""Sign in, sign out, change one's own password."""

from __future__ import annotations

from typing import Any

from flask import redirect, render_template, request, session, url_for

from server.api.wire import service_context
from server.errors import ApiError
from server.services import auth
from server.services.access import Principal
from server.web.base import TOKEN_KEY, _local_path, blueprint, field_messages, signed_in, zh_message


def _start_session(token: str) -> None:
    session.clear()  # a fresh session (and CSRF token) for the new sign-in
    session.permanent = True
    session[TOKEN_KEY] = token


@blueprint.route("/login", methods=["GET", "POST"])
def login() -> Any:
    """The sign-in page; a successful sign-in goes to ``next`` (a local path) or the dashboard."""
    target = _local_path(request.values.get("next"))
    if request.method == "GET":
        return render_template("login.html", next=target, username="", error=None)
    username = request.form.get("username", "")[:80]
    try:
        result = auth.login(
            service_context(),
            username,
            request.form.get("password", ""),
            ip=request.remote_addr or "",
        )
    except ApiError as exc:
        page = render_template("login.html", next=target, username=username, error=zh_message(exc))
        return page, exc.status, exc.headers()
    _start_session(result.token)
    return redirect(target)


@blueprint.post("/logout")
@signed_in()
def logout(principal: Principal) -> Any:
    """Revoke the session's token and forget the session."""
    auth.logout(str(session.get(TOKEN_KEY)), principal, ip=request.remote_addr or "")
    session.clear()
    return redirect(url_for("web.login"))


@blueprint.route("/password", methods=["GET", "POST"])
@signed_in()
def password(principal: Principal) -> Any:
    """Change one's own password (other sessions and API tokens of the account end)."""
    if request.method == "GET":
        return render_template("password.html", error=None, fields={}, done=False)
    new = request.form.get("new_password", "")
    if new != request.form.get("repeat_password", ""):
        fields = {"repeat_password": ["两次输入的新密码不一致"]}
        return render_template("password.html", error="两次输入的新密码不一致", fields=fields), 400
    try:
        result = auth.change_password(
            service_context(),
            principal,
            request.form.get("current_password", ""),
            new,
            ip=request.remote_addr or "",
        )
    except ApiError as exc:
        page = render_template(
            "password.html", error=zh_message(exc), fields=field_messages(exc), done=False
        )
        return page, exc.status, exc.headers()
    _start_session(result.token)
    return render_template("password.html", error=None, fields={}, done=True)
