"""Wire framing: ``u32 length | u8 version | msgpack payload``, and an incremental decoder.

``length`` (big-endian) counts the bytes after the length field: the version byte plus the
payload.  The decoder is sans-IO: feed it bytes, get whole payloads back.  Anything a
remote peer can get wrong raises :class:`RemoteProtocolError`, never a crash.
"""

from __future__ import annotations

import struct
from collections import deque

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

    Received chunks are kept as they came (never copied into a growing buffer), so a
    large frame costs its own size while it arrives, plus one copy when it completes.
    """

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        if max_frame_bytes < 2:
            raise ValueError(f"max_frame_bytes={max_frame_bytes} is too small (at least 2)")
        self.max_frame_bytes = max_frame_bytes
        self._chunks: deque[bytes] = deque()
        self._offset = 0
        """Bytes of ``_chunks[0]`` already consumed."""
        self._size = 0
        """Unconsumed bytes in ``_chunks``."""

    @property
    def buffered_bytes(self) -> int:
        """Bytes received that do not yet form a whole frame."""
        return self._size

    def feed(self, data: bytes, *, max_frames: int | None = None) -> list[bytes]:
        """Add received bytes; return the payloads of every frame now complete.

        With ``max_frames`` at most that many payloads are returned and the bytes after
        them stay buffered *unchecked* (a later ``feed(b"")`` continues), so that the
        frames after a hello are judged by the limit that applies after it.
        """
        if data:
            self._chunks.append(bytes(data))
            self._size += len(data)
        payloads: list[bytes] = []
        while self._size >= LENGTH_BYTES:
            if max_frames is not None and len(payloads) >= max_frames:
                break
            first = self._chunks[0]
            offset = self._offset
            if len(first) - offset <= LENGTH_BYTES:  # the head spans chunks: merge them
                first = self._merge_head()
                offset = 0
            (length,) = _LENGTH.unpack_from(first, offset)
            self._check_length(length)
            end = LENGTH_BYTES + length
            if self._size < end:
                break
            version = first[offset + LENGTH_BYTES]
            if version != FRAME_VERSION:
                raise RemoteProtocolError(
                    "bad_version", f"frame version {version}, this runtime speaks {FRAME_VERSION}"
                )
            if len(first) - offset >= end:  # the whole frame is in the first chunk
                payloads.append(first[offset + LENGTH_BYTES + 1 : offset + end])
                self._size -= end
                if len(first) - offset == end:
                    self._chunks.popleft()
                    self._offset = 0
                else:
                    self._offset = offset + end
            else:
                self._skip(LENGTH_BYTES + 1)
                payloads.append(self._take(length - 1))
        return payloads

    def _merge_head(self) -> bytes:
        """Join leading chunks until the first holds the length and version (if buffered)."""
        want = min(LENGTH_BYTES + 1, self._size)
        parts = [self._chunks.popleft()[self._offset :]]
        have = len(parts[0])
        while have < want:
            parts.append(self._chunks.popleft())
            have += len(parts[-1])
        merged = b"".join(parts)
        self._chunks.appendleft(merged)
        self._offset = 0
        return merged

    def _skip(self, count: int) -> None:
        """Consume ``count`` bytes that lie in the first chunk."""
        self._offset += count
        self._size -= count
        if self._offset == len(self._chunks[0]):
            self._chunks.popleft()
            self._offset = 0

    def _take(self, count: int) -> bytes:
        """Consume and return the next ``count`` bytes (all buffered)."""
        self._size -= count
        parts: list[bytes] = []
        while count:
            first = self._chunks[0]
            available = len(first) - self._offset
            if available > count:
                parts.append(first[self._offset : self._offset + count])
                self._offset += count
                break
            parts.append(first[self._offset :] if self._offset else first)
            count -= available
            self._chunks.popleft()
            self._offset = 0
        if len(parts) == 1:
            return parts[0]
        return b"".join(parts)

    def clear(self) -> None:
        """Drop every buffered byte (the connection is being abandoned)."""
        self._chunks.clear()
        self._offset = 0
        self._size = 0

    def close(self) -> None:
        """The stream ended: raise if it stopped in the middle of a frame."""
        if self._size:
            raise RemoteProtocolError(
                "truncated",
                f"connection closed with {self._size} bytes of an incomplete frame",
            )

    def _check_length(self, length: int) -> None:
        if length == 0:
            raise RemoteProtocolError("empty_frame", "frame length 0 (no version byte)")
        if length > self.max_frame_bytes:
            raise RemoteProtocolError(
                "oversized",
                f"frame length {length} exceeds max_frame_bytes={self.max_frame_bytes}",
            )
