"""Protobuf without protoc: the few messages are hand-encoded. Field numbers, from the CRI API
(k8s.io/cri-api pkg/apis/runtime/v1/api.proto, package runtime.v1; v1alpha2 uses the same numbers):
    ImageSpec            { string image = 1; map<string,string> annotations = 2; ... }
    ImageFilter          { ImageSpec image = 1; }
    ListImagesRequest    { ImageFilter filter = 1; }
    ListImagesResponse   { repeated Image images = 1; }
    Image                { string id = 1; repeated string repo_tags = 2; repeated string repo_digests = 3;
                           uint64 size = 4; ... }
    ImageStatusRequest   { ImageSpec image = 1; bool verbose = 2; }
    ImageStatusResponse  { Image image = 1; map<string,string> info = 2; }   image unset: not present
    PullImageRequest     { ImageSpec image = 1; AuthConfig auth = 2; PodSandboxConfig sandbox_config = 3; }
    PullImageResponse    { string image_ref = 1; }
    RemoveImageRequest   { ImageSpec image = 1; }
    RemoveImageResponse  { }
PullImage is sent without auth (registry credentials for a mirror live in hosts.toml) and without a
sandbox config, as `crictl pull` does.
"""

from __future__ import annotations

from dataclasses import dataclass

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


def encode_varint(value: int) -> bytes:
    if value < 0:
        value &= (1 << 64) - 1  # int64 negatives: ten-byte two's complement, as protobuf does
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _tag(field: int, wire: int) -> bytes:
    return encode_varint(field << 3 | wire)


def encode_bytes(field: int, value: bytes) -> bytes:
    """A length-delimited field (string, bytes or embedded message), always written."""
    return _tag(field, _LEN) + encode_varint(len(value)) + value


def encode_string(field: int, value: str) -> bytes:
    """A proto3 string: omitted when empty."""
    return encode_bytes(field, value.encode()) if value else b""


def encode_bool(field: int, value: bool) -> bytes:
    """A proto3 bool: omitted when false."""
    return _tag(field, _VARINT) + b"\x01" if value else b""


def decode_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """The varint at `pos` and the position after it."""
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise ValueError("varint too long")


def decode_fields(buf: bytes) -> dict[int, list[int | bytes]]:
    """Every field of one message: number -> values in wire order (ints for varint and fixed-width
    fields, bytes for length-delimited ones). Unknown fields are kept, groups are refused."""
    fields: dict[int, list[int | bytes]] = {}
    pos = 0
    while pos < len(buf):
        key, pos = decode_varint(buf, pos)
        field, wire = key >> 3, key & 7
        value: int | bytes
        if field == 0:
            raise ValueError("field number 0")
        if wire == _VARINT:
            value, pos = decode_varint(buf, pos)
        elif wire == _LEN:
            size, pos = decode_varint(buf, pos)
            if pos + size > len(buf):
                raise ValueError("truncated length-delimited field")
            value, pos = buf[pos:pos + size], pos + size
        elif wire in (_I64, _I32):
            width = 8 if wire == _I64 else 4
            if pos + width > len(buf):
                raise ValueError("truncated fixed-width field")
            value, pos = int.from_bytes(buf[pos:pos + width], "little"), pos + width
        else:
            raise ValueError(f"unsupported wire type {wire}")
        fields.setdefault(field, []).append(value)
    return fields


def _strings(fields: dict[int, list[int | bytes]], field: int) -> tuple[str, ...]:
    return tuple(v.decode("utf-8", "replace") for v in fields.get(field, []) if isinstance(v, bytes))


def _last_bytes(fields: dict[int, list[int | bytes]], field: int) -> bytes | None:
    values = [v for v in fields.get(field, []) if isinstance(v, bytes)]
    return values[-1] if values else None  # proto3: the last occurrence of a singular field wins


@dataclass(frozen=True)
class CriImage:
    id: str
    repo_tags: tuple[str, ...] = ()
    repo_digests: tuple[str, ...] = ()
    size: int = 0


def image_spec(ref: str) -> bytes:
    return encode_string(1, ref)


def image_status_request(ref: str, verbose: bool = False) -> bytes:
    return encode_bytes(1, image_spec(ref)) + encode_bool(2, verbose)


def pull_image_request(ref: str) -> bytes:
    return encode_bytes(1, image_spec(ref))


def remove_image_request(ref: str) -> bytes:
    return encode_bytes(1, image_spec(ref))


def list_images_request() -> bytes:
    return b""  # no filter: every image


def decode_image(buf: bytes) -> CriImage:
    f = decode_fields(buf)
    ids = _strings(f, 1)
    size = [v for v in f.get(4, []) if isinstance(v, int)]
    return CriImage(ids[-1] if ids else "", _strings(f, 2), _strings(f, 3), size[-1] if size else 0)


def decode_image_status_response(buf: bytes) -> CriImage | None:
    """The image, or None when the runtime does not have it (ImageStatusResponse.image unset)."""
    raw = _last_bytes(decode_fields(buf), 1)
    return None if raw is None else decode_image(raw)


def decode_list_images_response(buf: bytes) -> tuple[CriImage, ...]:
    return tuple(decode_image(v) for v in decode_fields(buf).get(1, []) if isinstance(v, bytes))


def decode_pull_image_response(buf: bytes) -> str:
    refs = _strings(decode_fields(buf), 1)
    return refs[-1] if refs else ""
