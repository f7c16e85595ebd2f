"""Wire framing: ``u32 length | u8 version | msgpack payload``, and an incremental decoder.

``length`` (big-endian) counts the bytes after the length field: the version byte plus the
payload.  The decoder is sans-IO: feed it bytes, get whole payloads back.  Anything a
remote peer can get wrong raises :class:`RemoteProtocolError`, never a crash.
"""

from __future__ import annotations

import struct

FRAME_VERSION = 1
"""Version byte of every frame this runtime writes and accepts."""

LENGTH_BYTES = 4
"""Size of the big-endian length prefix."""

DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024
"""Default bound on ``length`` (version byte + payload)."""

DEFAULT_MAX_HELLO_FRAME_BYTES = 4096
"""Default bound on the first frame of a connection (the hello), before the remote is known."""

_LENGTH = struct.Struct(">I")


class RemoteProtocolError(Exception):
    """The remote end sent something this runtime does not accept; close that connection.

    ``reason`` is a short machine-readable label (used as a metrics label).
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def encode_frame(payload: bytes, *, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> bytes:
    """Frame ``payload``; a local payload over the limit is a caller bug (ValueError)."""
    length = len(payload) + 1
    if length > max_frame_bytes:
        raise ValueError(
            f"frame of {length} bytes exceeds max_frame_bytes={max_frame_bytes}; "
            "send smaller messages or raise the limit on every node"
        )
    return _LENGTH.pack(length) + bytes((FRAME_VERSION,)) + payload


class FrameDecoder:
    """Incremental frame decoder with a hard size bound.

    The buffer never holds more than one frame's worth of bytes beyond what was fed in a
    single call: an oversized length is rejected as soon as its 4 bytes arrive.
    :attr:`max_frame_bytes` may be changed between calls (the runtime raises it once a
    connection's hello was accepted).
    """

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        if max_frame_bytes < 2:
            raise ValueError(f"max_frame_bytes={max_frame_bytes} is too small (at least 2)")
        self.max_frame_bytes = max_frame_bytes
        self._buffer = bytearray()

    @property
    def buffered_bytes(self) -> int:
        """Bytes received that do not yet form a whole frame."""
        return len(self._buffer)

    def feed(self, data: bytes, *, max_frames: int | None = None) -> list[bytes]:
        """Add received bytes; return the payloads of every frame now complete.

        With ``max_frames`` at most that many payloads are returned and the bytes after
        them stay buffered *unchecked* (a later ``feed(b"")`` continues), so that the
        frames after a hello are judged by the limit that applies after it.
        """
        self._buffer += data
        payloads: list[bytes] = []
        while len(self._buffer) >= LENGTH_BYTES:
            if max_frames is not None and len(payloads) >= max_frames:
                break
            (length,) = _LENGTH.unpack_from(self._buffer, 0)
            self._check_length(length)
            end = LENGTH_BYTES + length
            if len(self._buffer) < end:
                break
            version = self._buffer[LENGTH_BYTES]
            if version != FRAME_VERSION:
                raise RemoteProtocolError(
                    "bad_version", f"frame version {version}, this runtime speaks {FRAME_VERSION}"
                )
            payloads.append(bytes(self._buffer[LENGTH_BYTES + 1 : end]))
            del self._buffer[:end]
        return payloads

    def close(self) -> None:
        """The stream ended: raise if it stopped in the middle of a frame."""
        if self._buffer:
            raise RemoteProtocolError(
                "truncated",
                f"connection closed with {len(self._buffer)} bytes of an incomplete frame",
            )

    def _check_length(self, length: int) -> None:
        if length == 0:
            raise RemoteProtocolError("empty_frame", "frame length 0 (no version byte)")
        if length > self.max_frame_bytes:
            raise RemoteProtocolError(
                "oversized",
                f"frame length {length} exceeds max_frame_bytes={self.max_frame_bytes}",
            )
