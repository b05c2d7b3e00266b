"""Sealing data at rest on the server: AES-256-GCM under a key derived from the server key.

Department rows hold ID numbers, medical amounts and disability status; a copy of the database
file (a backup, a stolen disk) must not show them. Each purpose (``"department_rows"`` …) gets
its own key, derived with HKDF-SHA256 from the server's current X25519 private key, which lives
in the key folder outside the database (``server.services.keys``). The derived key's id (the
server key id) is stored beside each sealed value, so values sealed before a key rotation still
open with the retired bundle. The AEAD primitives are ``sync_protocol.crypto``'s, the one module
that imports ``cryptography``.
"""

from __future__ import annotations

import os

from server.errors import InternalError
from server.services.keys import KeyService
from sync_protocol.crypto import AEAD_NONCE_LENGTH, aead_decrypt, aead_encrypt, hkdf_sha256
from sync_protocol.errors import WrongRecipientKey

_ALGORITHM = "aes-256-gcm"
_SALT = b"village-sync/at-rest/v1"


class SealedDataUnreadable(InternalError):
    """A sealed value did not open: its key bundle is gone, or the stored bytes were altered."""

    default_code = "sealed_data_unreadable"
    default_zh = "加密存储的数据无法解密（密钥缺失或数据被改动）"
    default_en = "Sealed data could not be opened (missing key or altered data)"


class Sealer:
    """Seals and opens values of one ``purpose`` with the key service's ring."""

    def __init__(self, keys: KeyService, purpose: str) -> None:
        self._keys = keys
        self._info = b"purpose:" + purpose.encode("ascii")
        self._derived: dict[str, bytes] = {}

    def _key(self, key_id: str) -> bytes:
        key = self._derived.get(key_id)
        if key is None:
            bundle = self._keys.ring().bundle_for(key_id)
            if bundle is None:
                raise SealedDataUnreadable(
                    en=f"the server key {key_id} that sealed this data is not in the key folder",
                    zh=f"加密该数据的服务器密钥 {key_id} 不在密钥目录中",
                )
            key = hkdf_sha256(bundle.encryption.raw(), salt=_SALT, info=self._info)
            self._derived[key_id] = key
        return key

    def current_key_id(self) -> str:
        """The id new values are sealed under (the current server key's)."""
        return self._keys.ring().current_id

    def seal(self, plaintext: bytes, aad: bytes, *, key_id: str | None = None) -> tuple[str, bytes]:
        """``(key id, nonce ‖ ciphertext ‖ tag)`` of ``plaintext`` bound to ``aad`` (the row's
        place, so a sealed value copied to another row does not open there)."""
        key_id = key_id or self.current_key_id()
        nonce = os.urandom(AEAD_NONCE_LENGTH)
        return key_id, nonce + aead_encrypt(_ALGORITHM, self._key(key_id), nonce, plaintext, aad)

    def open(self, key_id: str, sealed: bytes, aad: bytes) -> bytes:
        """The plaintext of a value :meth:`seal` made. Raises :class:`SealedDataUnreadable`."""
        nonce, body = sealed[:AEAD_NONCE_LENGTH], sealed[AEAD_NONCE_LENGTH:]
        try:
            return aead_decrypt(_ALGORITHM, self._key(key_id), nonce, body, aad)
        except (WrongRecipientKey, ValueError):
            raise SealedDataUnreadable() from None
