"""Outgoing frames and permessage-deflate, without sockets (RFC 6455 §5.2, RFC 7692)."""

from __future__ import annotations

import json
import random
import zlib
from typing import NamedTuple

import pytest

from aiohttp_wsapp.frames import (
    DEDICATED_COMPRESS_THRESHOLD,
    SHARED_COMPRESS_THRESHOLD,
    BroadcastFrames,
    Compression,
    DedicatedDeflater,
    Opcode,
    SharedDeflater,
    encode_frame,
    frame_header,
)

_TAIL = b"\x00\x00\xff\xff"


class Frame(NamedTuple):
    opcode: int
    rsv1: bool
    payload: bytes


def parse(data: bytes) -> Frame:
    """Parse one server frame: final, unmasked, RSV2 and RSV3 clear, nothing after it."""
    first, second = data[0], data[1]
    assert first & 0x80, "FIN is set"
    assert not first & 0x30, "RSV2 and RSV3 are clear"
    assert not second & 0x80, "a server does not mask"
    length, offset = second & 0x7F, 2
    if length == 126:
        length, offset = int.from_bytes(data[2:4], "big"), 4
    elif length == 127:
        length, offset = int.from_bytes(data[2:10], "big"), 10
    payload = data[offset:]
    assert len(payload) == length
    return Frame(first & 0x0F, bool(first & 0x40), payload)


def inflate(payload: bytes, decompressor: zlib._Decompress | None = None, bits: int = 15) -> bytes:
    """Inflate a compressed message as a peer does (RFC 7692 §7.2.2); fresh unless given one."""
    if decompressor is None:
        decompressor = zlib.decompressobj(-bits)
    return decompressor.decompress(payload + _TAIL)


def inflate_in_pieces(payload: bytes, bits: int) -> bytes:
    """Inflate 256 bytes at a time, so that only the window holds what came before.

    zlib lets a match refer to anything in the output of the same call, whatever its window:
    inflating in pieces makes it refuse a match farther back than ``2 ** bits`` bytes.
    """
    decompressor = zlib.decompressobj(-bits)
    pieces = [decompressor.decompress(payload + _TAIL, 256)]
    while decompressor.unconsumed_tail:
        pieces.append(decompressor.decompress(decompressor.unconsumed_tail, 256))
    return b"".join(pieces) + decompressor.flush()


def chat_message(number: int) -> bytes:
    """A chat message of about 150 bytes, much like the one before it."""
    return json.dumps(
        {
            "type": "message",
            "room": "general",
            "id": 100_000 + number,
            "user": "alice",
            "text": f"Message number {number} about the release that ships tomorrow",
        }
    ).encode()


def far_repeat(distance: int) -> bytes:
    """Hexadecimal noise (it compresses) whose first KiB comes back ``distance`` bytes later.

    Only a window of more than ``distance`` bytes finds that match.
    """
    rng = random.Random(distance)
    block = rng.randbytes(512).hex().encode()
    return block + rng.randbytes((distance - len(block)) // 2).hex().encode() + block


# -- frame headers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "header_length"),
    [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)],
)
def test_header_length_depends_on_payload_length(length: int, header_length: int) -> None:
    assert len(frame_header(Opcode.BINARY, length)) == header_length


@pytest.mark.parametrize("length", [0, 125, 126, 65535, 65536])
def test_encoded_frame_declares_its_payload_length(length: int) -> None:
    payload = bytes(length)
    assert parse(encode_frame(Opcode.BINARY, payload)) == Frame(Opcode.BINARY, False, payload)


def test_header_of_125_bytes_is_the_length_itself() -> None:
    assert frame_header(Opcode.TEXT, 125) == b"\x81\x7d"


def test_header_of_126_bytes_uses_16_bits() -> None:
    assert frame_header(Opcode.TEXT, 126) == b"\x81\x7e\x00\x7e"


def test_header_of_65535_bytes_uses_16_bits() -> None:
    assert frame_header(Opcode.TEXT, 65535) == b"\x81\x7e\xff\xff"


def test_header_of_65536_bytes_uses_64_bits() -> None:
    assert frame_header(Opcode.TEXT, 65536) == b"\x81\x7f\x00\x00\x00\x00\x00\x01\x00\x00"


def test_header_sets_rsv1_only_when_compressed() -> None:
    assert frame_header(Opcode.TEXT, 5) == b"\x81\x05"
    assert frame_header(Opcode.TEXT, 5, compressed=True) == b"\xc1\x05"


def test_encode_frame_accepts_bytearray_and_memoryview() -> None:
    assert encode_frame(Opcode.BINARY, bytearray(b"ab")) == b"\x82\x02ab"
    assert encode_frame(Opcode.BINARY, memoryview(b"ab")) == b"\x82\x02ab"


# -- shared mode ---------------------------------------------------------------------------------


def test_shared_frame_is_compressed_with_rsv1() -> None:
    frame = parse(SharedDeflater(15).frame(Opcode.TEXT, chat_message(1)))
    assert frame.opcode == Opcode.TEXT
    assert frame.rsv1
    assert len(frame.payload) < len(chat_message(1))


def test_shared_messages_inflate_each_with_a_fresh_decompressor() -> None:
    deflater = SharedDeflater(15)
    for number in range(5):
        frame = parse(deflater.frame(Opcode.TEXT, chat_message(number)))
        assert frame.rsv1
        assert inflate(frame.payload) == chat_message(number)


def test_shared_messages_inflate_in_the_peers_context_too() -> None:
    deflater = SharedDeflater(15)
    decompressor = zlib.decompressobj(-15)
    for number in range(5):
        frame = parse(deflater.frame(Opcode.TEXT, chat_message(number)))
        assert inflate(frame.payload, decompressor) == chat_message(number)


def test_shared_message_compresses_the_same_whatever_came_before() -> None:
    deflater = SharedDeflater(15)
    first = deflater.frame(Opcode.TEXT, chat_message(1))
    deflater.frame(Opcode.TEXT, chat_message(2))
    assert deflater.frame(Opcode.TEXT, chat_message(1)) == first


def test_shared_message_under_threshold_is_plain() -> None:
    message = b"x" * 99
    frame = parse(SharedDeflater(15, threshold=100).frame(Opcode.TEXT, message))
    assert frame == Frame(Opcode.TEXT, False, message)


def test_shared_message_at_threshold_is_compressed() -> None:
    frame = parse(SharedDeflater(15, threshold=100).frame(Opcode.TEXT, b"x" * 100))
    assert frame.rsv1
    assert inflate(frame.payload) == b"x" * 100


def test_shared_incompressible_message_is_plain() -> None:
    message = random.Random(1).randbytes(4096)
    frame = parse(SharedDeflater(15, threshold=0).frame(Opcode.BINARY, message))
    assert frame == Frame(Opcode.BINARY, False, message)


def test_empty_message_is_plain_even_without_threshold() -> None:
    assert SharedDeflater(15, threshold=0).frame(Opcode.TEXT, b"") == b"\x81\x00"
    assert DedicatedDeflater(15, threshold=0).frame(Opcode.TEXT, b"") == b"\x81\x00"


def test_shared_deflater_respects_window_bits() -> None:
    message = far_repeat(4096)
    frame = parse(SharedDeflater(9, threshold=0).frame(Opcode.BINARY, message))
    assert frame.rsv1
    assert inflate_in_pieces(frame.payload, bits=9) == message


def test_window_bits_test_detects_a_larger_window() -> None:
    # The check above means something: a 15-bit window does refer 4 KiB back.
    frame = parse(SharedDeflater(15, threshold=0).frame(Opcode.BINARY, far_repeat(4096)))
    with pytest.raises(zlib.error, match="distance too far back"):
        inflate_in_pieces(frame.payload, bits=9)


def test_shared_large_message_round_trips() -> None:
    message = b"".join(chat_message(number) for number in range(1000))
    frame = parse(SharedDeflater(15).frame(Opcode.TEXT, message))
    assert len(message) > 65536 > len(frame.payload)
    assert inflate(frame.payload) == message


def test_shared_deflater_compresses_bytearray_and_memoryview() -> None:
    deflater = SharedDeflater(15, threshold=0)
    for payload in (bytearray(chat_message(1)), memoryview(chat_message(1))):
        assert inflate(parse(deflater.frame(Opcode.BINARY, payload)).payload) == chat_message(1)


# -- dedicated mode ------------------------------------------------------------------------------


def test_dedicated_keeps_context_so_a_similar_message_is_smaller() -> None:
    deflater = DedicatedDeflater(15)
    first = parse(deflater.frame(Opcode.TEXT, chat_message(1)))
    second = parse(deflater.frame(Opcode.TEXT, chat_message(2)))
    assert first.rsv1
    assert second.rsv1
    assert len(second.payload) < len(first.payload) // 2


def test_dedicated_messages_inflate_in_the_peers_context() -> None:
    deflater = DedicatedDeflater(15)
    decompressor = zlib.decompressobj(-15)
    for number in range(5):
        frame = parse(deflater.frame(Opcode.TEXT, chat_message(number)))
        assert inflate(frame.payload, decompressor) == chat_message(number)


def test_dedicated_compressor_is_made_on_the_first_compressed_message() -> None:
    deflater = DedicatedDeflater(15, threshold=100)
    deflater.frame(Opcode.TEXT, b"short")
    assert deflater._compressor is None
    deflater.frame(Opcode.TEXT, chat_message(1))
    assert deflater._compressor is not None


def test_dedicated_message_under_threshold_is_plain_and_out_of_context() -> None:
    deflater = DedicatedDeflater(15, threshold=100)
    decompressor = zlib.decompressobj(-15)
    messages = [chat_message(1), b"x" * 99, chat_message(2)]
    frames = [parse(deflater.frame(Opcode.TEXT, message)) for message in messages]
    assert [frame.rsv1 for frame in frames] == [True, False, True]
    assert frames[1].payload == messages[1]
    assert inflate(frames[0].payload, decompressor) == messages[0]
    assert inflate(frames[2].payload, decompressor) == messages[2]


def test_dedicated_incompressible_message_is_plain_and_context_starts_again() -> None:
    deflater = DedicatedDeflater(15)
    decompressor = zlib.decompressobj(-15)
    noise = random.Random(2).randbytes(2048)
    first = parse(deflater.frame(Opcode.TEXT, chat_message(1)))
    plain = parse(deflater.frame(Opcode.BINARY, noise))
    third = parse(deflater.frame(Opcode.TEXT, chat_message(2)))
    assert plain == Frame(Opcode.BINARY, False, noise)
    assert inflate(first.payload, decompressor) == chat_message(1)
    assert inflate(third.payload, decompressor) == chat_message(2)
    assert inflate(third.payload) == chat_message(2)  # no reference to the earlier message


def test_dedicated_deflater_respects_window_bits() -> None:
    deflater = DedicatedDeflater(10, threshold=0)
    decompressor = zlib.decompressobj(-10)
    message = far_repeat(2048)  # sent twice: the second could refer to the first, 4 KiB back
    for _ in range(2):
        frame = parse(deflater.frame(Opcode.BINARY, message))
        assert frame.rsv1
        assert inflate(frame.payload, decompressor) == message


def test_dedicated_window_bits_test_detects_a_larger_window() -> None:
    deflater = DedicatedDeflater(15, threshold=0)
    decompressor = zlib.decompressobj(-10)
    message = far_repeat(2048)
    inflate(parse(deflater.frame(Opcode.BINARY, message)).payload, decompressor)
    with pytest.raises(zlib.error, match="distance too far back"):
        inflate(parse(deflater.frame(Opcode.BINARY, message)).payload, decompressor)


def test_dedicated_window_is_the_smaller_of_negotiated_and_configured() -> None:
    compression = Compression("dedicated", window_bits=12)
    negotiated_10 = compression.deflater(10, no_context_takeover=False)
    negotiated_15 = compression.deflater(15, no_context_takeover=False)
    assert isinstance(negotiated_10, DedicatedDeflater)
    assert isinstance(negotiated_15, DedicatedDeflater)
    assert (negotiated_10.window_bits, negotiated_15.window_bits) == (10, 12)


def test_dedicated_deflaters_are_one_per_connection() -> None:
    compression = Compression("dedicated")
    first = compression.deflater(15, no_context_takeover=False)
    assert compression.deflater(15, no_context_takeover=False) is not first


def test_dedicated_honours_no_context_takeover() -> None:
    deflater = Compression("dedicated").deflater(15, no_context_takeover=True)
    first = parse(deflater.frame(Opcode.TEXT, chat_message(1)))
    again = parse(deflater.frame(Opcode.TEXT, chat_message(1)))
    assert again.rsv1
    assert again.payload == first.payload  # no reference to the first
    assert inflate(again.payload) == chat_message(1)


# -- endpoint settings ---------------------------------------------------------------------------


def test_shared_mode_gives_one_deflater_per_window_size() -> None:
    compression = Compression()
    first = compression.deflater(15, no_context_takeover=False)
    assert isinstance(first, SharedDeflater)
    assert compression.deflater(15, no_context_takeover=True) is first
    assert compression.deflater(12, no_context_takeover=False) is not first
    assert compression.deflater(12, no_context_takeover=False).window_bits == 12


def test_thresholds_default_to_the_modes_own() -> None:
    assert Compression().threshold == SHARED_COMPRESS_THRESHOLD
    assert Compression("dedicated").threshold == DEDICATED_COMPRESS_THRESHOLD
    assert Compression(threshold=10).deflater(15, no_context_takeover=False).threshold == 10


@pytest.mark.parametrize("mode", ["off", "", "Dedicated"])
def test_compression_rejects_an_unknown_mode(mode: str) -> None:
    with pytest.raises(ValueError, match="compress"):
        Compression(mode)  # type: ignore[arg-type]


@pytest.mark.parametrize("window_bits", [8, 16, 0, -15])
def test_compression_rejects_window_bits_outside_9_to_15(window_bits: int) -> None:
    with pytest.raises(ValueError, match="window bits"):
        Compression("dedicated", window_bits=window_bits)


def test_compression_rejects_a_negative_threshold() -> None:
    with pytest.raises(ValueError, match="compress_threshold"):
        Compression(threshold=-1)


@pytest.mark.parametrize("value", [1.5, "12", True])
def test_compression_rejects_settings_that_are_not_int(value: object) -> None:
    with pytest.raises(TypeError):
        Compression(threshold=value)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Compression(window_bits=value)  # type: ignore[arg-type]


# -- broadcast -----------------------------------------------------------------------------------


def test_broadcast_compresses_once_per_shared_deflater() -> None:
    deflater = SharedDeflater(15)
    frames = BroadcastFrames(Opcode.TEXT, chat_message(1))
    first = frames.frame(deflater)
    assert frames.frame(deflater) is first
    assert inflate(parse(first).payload) == chat_message(1)


def test_broadcast_builds_the_plain_frame_once() -> None:
    frames = BroadcastFrames(Opcode.TEXT, chat_message(1))
    plain = frames.frame(None)
    assert frames.frame(None) is plain
    assert parse(plain) == Frame(Opcode.TEXT, False, chat_message(1))


def test_broadcast_frames_differ_per_window_size() -> None:
    frames = BroadcastFrames(Opcode.BINARY, far_repeat(4096))
    small, large = frames.frame(SharedDeflater(9)), frames.frame(SharedDeflater(15))
    assert inflate_in_pieces(parse(small).payload, bits=9) == far_repeat(4096)
    assert len(large) < len(small)


def test_broadcast_to_dedicated_deflaters_keeps_each_ones_context() -> None:
    first, second = DedicatedDeflater(15), DedicatedDeflater(15)
    first.frame(Opcode.TEXT, chat_message(1))  # only the first has context
    frames = BroadcastFrames(Opcode.TEXT, chat_message(2))
    assert len(frames.frame(first)) < len(frames.frame(second))
