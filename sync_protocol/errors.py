"""Typed exceptions of the sync protocol.

Every error the protocol raises is a subclass of :class:`ProtocolError` and carries a stable
machine ``code`` (a short snake_case string that never changes once published, so the server can
map it to an HTTP error body and a device can show a translated message) and a human ``message``.
``message`` is English; ``message_zh`` is the Chinese text shown to users.

Keep this module a flat list of classes: other parts of ``sync_protocol`` append their own
subclasses here.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base of every sync-protocol error.

    Attributes:
        code: stable machine-readable error code (snake_case).
        message: English human-readable explanation.
        message_zh: Chinese human-readable explanation.
    """

    code: str = "protocol_error"
    default_message: str = "sync protocol error"
    default_message_zh: str = "同步协议错误"

    def __init__(self, *args: str, message_zh: str | None = None) -> None:
        """Build the error as ``Cls()``, ``Cls(message)`` or ``Cls(code, message)``.

        With no arguments the class defaults are used; with one, it is the English message and
        the class ``code`` is kept; with two, they are ``code`` and ``message``.

        Raises:
            TypeError: if more than two positional arguments are given.
        """
        if len(args) > 2:
            raise TypeError("ProtocolError takes at most (code, message)")
        if len(args) == 2:
            code, message = args
        else:
            code, message = type(self).code, (args[0] if args else type(self).default_message)
        self.code = code
        self.message = message
        self.message_zh = message_zh or type(self).default_message_zh
        super().__init__(f"[{self.code}] {self.message}")


# --- Envelope (sync_protocol.envelope / sync_protocol.crypto) -------------------------------


class EnvelopeError(ProtocolError):
    """Base of errors raised while sealing, parsing or opening an envelope."""

    code = "envelope_error"
    default_message = "the sync envelope could not be processed"
    default_message_zh = "同步数据包无法处理"


class MalformedHeader(EnvelopeError):
    """The envelope header is not well formed (bad magic, bad field value, inconsistent lengths)."""

    code = "envelope_malformed_header"
    default_message = "the envelope header is malformed"
    default_message_zh = "数据包头格式错误"


class UnsupportedVersion(EnvelopeError):
    """The envelope's format version is not one this code understands."""

    code = "envelope_unsupported_version"
    default_message = "the envelope format version is not supported"
    default_message_zh = "不支持的数据包格式版本"


class UnsupportedSuite(EnvelopeError):
    """The envelope names a cipher suite this code does not implement."""

    code = "envelope_unsupported_suite"
    default_message = "the envelope cipher suite is not supported"
    default_message_zh = "不支持的加密套件"


class UnknownKeyId(EnvelopeError):
    """The envelope is sealed to a recipient key id the receiver does not hold."""

    code = "envelope_unknown_key_id"
    default_message = "the envelope is sealed to a key this receiver does not hold"
    default_message_zh = "数据包使用了未知的接收方密钥"


class UnknownSender(EnvelopeError):
    """The sender id in the envelope has no known signature verification key."""

    code = "envelope_unknown_sender"
    default_message = "the envelope sender is unknown"
    default_message_zh = "未知的发送方"


class WrongRecipientKey(EnvelopeError):
    """Decryption failed: the ciphertext was not sealed to the private key used to open it."""

    code = "envelope_wrong_recipient_key"
    default_message = "the envelope could not be decrypted with the recipient key"
    default_message_zh = "无法用接收方密钥解密数据包"


class BadSignature(EnvelopeError):
    """The sender's Ed25519 signature over header and ciphertext does not verify."""

    code = "envelope_bad_signature"
    default_message = "the envelope signature is invalid"
    default_message_zh = "数据包签名无效"


class Truncated(EnvelopeError):
    """The envelope is shorter than its header says it is (or has trailing bytes)."""

    code = "envelope_truncated"
    default_message = "the envelope is truncated or has a wrong length"
    default_message_zh = "数据包不完整或长度错误"


class Replayed(EnvelopeError):
    """The sender's batch sequence number was already seen (the caller's check said so)."""

    code = "envelope_replayed"
    default_message = "the envelope sequence number was already used"
    default_message_zh = "数据包序号已使用过（重放）"


class TooLarge(EnvelopeError):
    """The envelope or its payload exceeds the protocol's size limit."""

    code = "envelope_too_large"
    default_message = "the envelope is larger than allowed"
    default_message_zh = "数据包过大"


class KeyFileError(EnvelopeError):
    """A private key file is missing, malformed or readable by group/others."""

    code = "key_file_error"
    default_message = "the private key file cannot be used"
    default_message_zh = "私钥文件无法使用"


class InvalidKey(EnvelopeError):
    """Raw key bytes or their base64 text do not encode a valid key of the expected kind."""

    code = "invalid_key"
    default_message = "the key is not valid"
    default_message_zh = "密钥无效"


# --- Compression, batch codec, messages and exchange framing (S3) -----------------------------
# sync_protocol.compression / codec / messages / exchange. ``details`` hold the facts a caller
# may show or log (the field name, the frame index ...).


class CompressionError(ProtocolError):
    """Base of the errors raised while compressing or decompressing a payload."""

    code = "compression_error"
    default_message = "the payload could not be decompressed"
    default_message_zh = "数据解压失败"


class UnknownCompression(CompressionError):
    """The compression id is not a known method, or not one the receiver allows."""

    code = "unknown_compression"
    default_message = "the compression method is not supported"
    default_message_zh = "不支持的压缩方式"


class UnknownDictionary(CompressionError):
    """The envelope names a compression dictionary the receiver does not hold."""

    code = "unknown_dictionary"
    default_message = "the compression dictionary is unknown"
    default_message_zh = "未知的压缩字典"


class DecompressedTooLarge(CompressionError):
    """The payload would decompress to more than the allowed size (a decompression bomb)."""

    code = "decompressed_too_large"
    default_message = "the payload decompresses to more than the allowed size"
    default_message_zh = "解压后的数据超过上限"


class CorruptCompressedData(CompressionError):
    """The compressed bytes are not one complete, well-formed stream of the named method."""

    code = "corrupt_compressed_data"
    default_message = "the compressed data is corrupt or truncated"
    default_message_zh = "压缩数据损坏或不完整"


class DictionaryTrainingFailed(CompressionError):
    """zstd could not train a dictionary from the given samples (too few or too small)."""

    code = "dictionary_training_failed"
    default_message = "a compression dictionary could not be trained from the samples"
    default_message_zh = "无法用样本训练压缩字典"


class MalformedBatch(ProtocolError):
    """The bytes are not a well-formed op batch (sync_protocol.codec); ``where`` says what broke."""

    code = "batch_malformed"
    default_message = "the op batch is malformed"
    default_message_zh = "操作批次格式错误"

    def __init__(self, where: str, message: str) -> None:
        super().__init__(
            type(self).code,
            f"malformed op batch at {where}: {message}",
            message_zh=f"操作批次格式错误（{where}）：{message}",
        )
        self.where = where


class InvalidMessage(ProtocolError):
    """A sync message (sync_protocol.messages) fails validation; ``field`` names the culprit."""

    code = "message_invalid"
    default_message = "the sync message is invalid"
    default_message_zh = "同步消息无效"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(
            type(self).code,
            f"{field}: {message}",
            message_zh=f"同步消息字段 {field} 无效：{message}",
        )
        self.field = field


class MalformedFrame(ProtocolError):
    """The request/response body is not a valid sequence of length-prefixed frames."""

    code = "frame_malformed"
    default_message = "the exchange body is not a valid sequence of frames"
    default_message_zh = "同步请求的分帧格式错误"


class ServerRefused(ProtocolError):
    """The server answered the exchange with a refusal (``code`` is the server's refusal code).

    Known codes: ``device_revoked``, ``device_unknown``, ``clock_skew``,
    ``unknown_form_version``, ``scope_denied``, ``busy``, ``exchange_invalid``.
    """

    code = "server_refused"
    default_message = "the server refused the sync exchange"
    default_message_zh = "服务器拒绝了本次同步"
    # How long the server asked the device to wait before trying again (0 = no hint).
    backoff_ms: int = 0


class OutboxFileInvalid(ProtocolError):
    """An outbox file (sneakernet, ``outbox_file``) that cannot be read: wrong first line, a
    header that is not the documented JSON, a body cut short or altered. ``where`` names the
    place: ``line 1``, ``line 2``, ``header.<field>`` or ``body``."""

    code = "outbox_file_invalid"
    default_message = "not a readable outbox file"
    default_message_zh = "不是可读取的待发送数据文件"

    def __init__(self, message: str, *, message_zh: str, where: str) -> None:
        super().__init__(message, message_zh=message_zh)
        self.where = where
