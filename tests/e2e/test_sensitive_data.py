"""Sensitive data on the wire and in the log (the "sensitive data" proof of issue 16).

Every HTTP byte of a sync + admin session goes through recording proxies on loopback: one for
the tablet and a township reviewer, one for the county admin. The tablet enrols, fills households
(ID numbers and phone numbers in the rosters) and syncs; the reviewer lists and opens the
records and reads the audit and conflicts; the county admin opens the same records unmasked (allowed). No ID
number or phone appears in clear anywhere but in the county admin's answers: not in the
tablet's traffic (sealed envelopes), not in the reviewer's (masked), not in the server's log.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path

from forms.instruments.samples import sample_household
from tests.e2e.conftest import TOWNSHIP, VILLAGE, CountyServer, new_device
from village_client_stub.simulator import AdminSession, fill_households
from village_client_stub.sync_client import SyncClient
from village_client_stub.transport import HttpTransport

HOUSEHOLDS = range(3)


class RecordingProxy:
    """A TCP proxy on 127.0.0.1 that keeps every byte it forwards, both ways."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.recorded: list[bytes] = []
        self._lock = threading.Lock()
        self._pumps: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            self._sockets += [client, server]
            for src, dst in ((client, server), (server, client)):
                pump = threading.Thread(target=self._pump, args=(src, dst), daemon=True)
                self._pumps.append(pump)
                pump.start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                with self._lock:
                    self.recorded.append(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            src.close()  # each socket is the source of exactly one pump

    def bytes(self) -> bytes:
        with self._lock:
            return b"".join(self.recorded)

    def close(self) -> None:
        """Stop accepting, cut every open connection (keep-alive ones too) and wait."""
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        except OSError:
            pass
        self.listener.close()
        self._acceptor.join(30)
        for sock in self._sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in self._pumps:
            thread.join(30)


def test_no_id_number_or_phone_in_clear_outside_sealed_envelopes_and_allowed_roles(
    county: CountyServer, admin: AdminSession, tmp_path: Path
) -> None:
    host, port = county.url.removeprefix("http://").split(":")
    field_proxy = RecordingProxy((host, int(port)))
    admin_proxy = RecordingProxy((host, int(port)))
    try:
        via = f"http://127.0.0.1:{field_proxy.port}"
        tablet = new_device(county, admin, tmp_path / "tablet.db", via_url=via)
        record_ids = fill_households(tablet, VILLAGE, HOUSEHOLDS)
        SyncClient(tablet).sync()
        tablet.close()

        secrets: set[str] = set()
        for seed in HOUSEHOLDS:
            roster = sample_household(seed, village_code=VILLAGE)["household_roster"]
            secrets.add(roster["phone"])
            secrets.update(m["id_number"] for m in roster["members"])
        assert len(secrets) >= 2 * len(HOUSEHOLDS)

        admin.post(
            "/api/v1/users",
            {
                "username": "reviewer",
                "password": "reviewer-password-16",
                "role": "township_reviewer",
                "area_prefix": TOWNSHIP,
            },
        )
        reviewer = AdminSession(HttpTransport(via), "reviewer", "reviewer-password-16")
        listed = reviewer.get(f"/api/v1/records?village={VILLAGE}&limit=100")
        assert listed["total"] == len(record_ids)  # the reviewer does see the records…
        masked_members = 0
        for record_id in record_ids:
            data = reviewer.get(f"/api/v1/records/{record_id}")["data"]
            for member in data.get("members", []):
                assert member["id_number"] and member["id_number"] not in secrets  # …masked
                masked_members += 1
        assert masked_members >= len(HOUSEHOLDS)
        reviewer.get("/api/v1/audit?limit=100")
        reviewer.get("/api/v1/conflicts?status=all")

        county_admin = AdminSession(
            HttpTransport(f"http://127.0.0.1:{admin_proxy.port}"), "admin", county.admin_password
        )
        unmasked = "".join(
            str(county_admin.get(f"/api/v1/records/{record_id}")) for record_id in record_ids
        )

        field_bytes = field_proxy.bytes()
        log = county.log().encode()
        leaks = {
            secret: where
            for secret in secrets
            for where, text in (("tablet+reviewer traffic", field_bytes), ("server log", log))
            if secret.encode() in text
        }
        shown_to_admin = sum(secret in unmasked for secret in secrets)
        print(
            f"sensitive data: {len(secrets)} ID numbers and phones, "
            f"{len(field_bytes)} B of tablet+reviewer traffic and {len(log)} B of server log "
            f"searched: {len(leaks)} in clear; the county admin saw {shown_to_admin} unmasked"
        )
        assert leaks == {}
        assert shown_to_admin == len(secrets)  # the search finds them where they are allowed
        # ... and the recording proxy caught them on the admin's wire: the search works.
        assert all(secret.encode() in admin_proxy.bytes() for secret in secrets)
    finally:
        field_proxy.close()
        admin_proxy.close()
