"""The ADB wire format as a phone's adbd speaks it: message headers and RSA authentication.

A message is a 24-byte little-endian header ``command, arg0, arg1, data_length, data_check,
magic`` (``magic == command ^ 0xffffffff``) followed by ``data_length`` bytes. ``data_check`` is
the byte sum of the data (not a CRC, whatever the old field name says); from protocol version
0x01000001 on both sides may leave it 0 and neither checks it, below that it must be right.
"""

from __future__ import annotations

import base64
import hmac
import struct
from dataclasses import dataclass

HEADER = struct.Struct("<6I")


def _cmd(name: bytes) -> int:
    return int.from_bytes(name, "little")


A_CNXN = _cmd(b"CNXN")
A_AUTH = _cmd(b"AUTH")
A_OPEN = _cmd(b"OPEN")
A_OKAY = _cmd(b"OKAY")
A_CLSE = _cmd(b"CLSE")
A_WRTE = _cmd(b"WRTE")
A_SYNC = _cmd(b"SYNC")
A_STLS = _cmd(b"STLS")
COMMANDS = {A_CNXN, A_AUTH, A_OPEN, A_OKAY, A_CLSE, A_WRTE, A_SYNC, A_STLS}

VERSION_MIN = 0x01000000
VERSION_SKIP_CHECKSUM = 0x01000001
VERSION = VERSION_SKIP_CHECKSUM  # what this daemon speaks, like adbd since Android 9
MAX_PAYLOAD_V1 = 4 * 1024
MAX_PAYLOAD = 1024 * 1024  # the largest payload any adb accepts

AUTH_TOKEN = 1
AUTH_SIGNATURE = 2
AUTH_RSAPUBLICKEY = 3
TOKEN_SIZE = 20

# DER DigestInfo prefix of a SHA-1 digest (RFC 8017, section 9.2, note 1). adb signs the raw
# 20-byte token as if it were a SHA-1 digest, so the signed block is prefix + token.
_SHA1_DIGEST_INFO = bytes.fromhex("3021300906052b0e03021a05000414")


class ProtocolError(Exception):
    """The peer sent something that is not ADB."""


def command_name(command: int) -> str:
    raw = command.to_bytes(4, "little")
    return raw.decode("ascii") if raw.isascii() and raw.isalpha() else f"0x{command:08x}"


def checksum(data: bytes) -> int:
    """adb's ``data_check``: the sum of the payload bytes, modulo 2**32."""
    return sum(data) & 0xFFFFFFFF


@dataclass(frozen=True)
class Header:
    command: int
    arg0: int
    arg1: int
    data_length: int
    data_check: int


def pack(command: int, arg0: int, arg1: int, data: bytes = b"", *, with_checksum: bool) -> bytes:
    """One complete message, header and data."""
    check = checksum(data) if with_checksum and data else 0
    header = HEADER.pack(
        command, arg0 & 0xFFFFFFFF, arg1 & 0xFFFFFFFF, len(data), check, command ^ 0xFFFFFFFF
    )
    return header + data


def parse_header(raw: bytes) -> Header:
    command, arg0, arg1, length, check, magic = HEADER.unpack(raw)
    if magic != command ^ 0xFFFFFFFF:
        raise ProtocolError(f"bad magic 0x{magic:08x} for command 0x{command:08x}")
    if command not in COMMANDS:
        raise ProtocolError(f"unknown command {command_name(command)}")
    if length > MAX_PAYLOAD:
        raise ProtocolError(f"payload of {length} bytes exceeds {MAX_PAYLOAD}")
    return Header(command, arg0, arg1, length, check)


@dataclass(frozen=True)
class AndroidPublicKey:
    """An adb public key: ``base64(RSAPublicKey struct) user@host``.

    The struct (``libcrypto_utils/android_pubkey.c``) is little-endian: ``uint32 len`` (modulus
    size in 32-bit words), ``uint32 n0inv`` (-1/n mod 2**32), ``modulus[len*4]``,
    ``rr[len*4]`` (2**(2*bits) mod n) and ``uint32 exponent``.
    """

    modulus: int
    exponent: int
    size_bytes: int
    text: str  # the key as it arrived, comment included: what goes into adb_keys

    @property
    def comment(self) -> str:
        parts = self.text.split(None, 1)
        return parts[1] if len(parts) > 1 else ""

    @classmethod
    def parse(cls, text: str) -> AndroidPublicKey:
        """Parse one adb public key; ValueError if it is not one."""
        text = text.strip().strip("\0").strip()
        if not text:
            raise ValueError("empty public key")
        b64 = text.split(None, 1)[0]
        try:
            blob = base64.b64decode(b64, validate=True)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"public key is not base64: {exc}") from None
        if len(blob) < 12:
            raise ValueError("public key is too short")
        words, n0inv = struct.unpack_from("<II", blob, 0)
        size = words * 4
        if words == 0 or len(blob) != 8 + 2 * size + 4:
            raise ValueError(f"public key struct has {len(blob)} bytes, not 8 + 2*{size} + 4")
        modulus = int.from_bytes(blob[8 : 8 + size], "little")
        rr = int.from_bytes(blob[8 + size : 8 + 2 * size], "little")
        (exponent,) = struct.unpack_from("<I", blob, 8 + 2 * size)
        if modulus % 2 == 0 or modulus.bit_length() <= (size - 1) * 8:
            raise ValueError("public key modulus is malformed")
        if (n0inv * modulus + 1) % (1 << 32) != 0:
            raise ValueError("public key n0inv does not match its modulus")
        if rr != pow(2, 2 * size * 8, modulus):
            raise ValueError("public key rr does not match its modulus")
        if exponent < 3 or exponent % 2 == 0:
            raise ValueError(f"public key exponent {exponent} is invalid")
        return cls(modulus=modulus, exponent=exponent, size_bytes=size, text=text)

    def verify(self, token: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is this key's PKCS#1 v1.5 signature of ``token`` taken as a
        SHA-1 digest (what ``RSA_sign(NID_sha1, token, ...)`` makes in adb)."""
        if len(token) != TOKEN_SIZE or len(signature) != self.size_bytes:
            return False
        s = int.from_bytes(signature, "big")
        if s >= self.modulus:
            return False
        em = pow(s, self.exponent, self.modulus).to_bytes(self.size_bytes, "big")
        block = _SHA1_DIGEST_INFO + token
        padding = self.size_bytes - len(block) - 3
        if padding < 8:
            return False
        expected = b"\x00\x01" + b"\xff" * padding + b"\x00" + block
        return hmac.compare_digest(em, expected)
