"""Validated scalar types for the config schema: addresses, VIPs, BGP communities.

Each type keeps its plain Python type (``ipaddress`` objects, ``str``) and adds a validator
whose message names the offending value, so an error reads ``<path>: <value> is not ...``.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from typing import Annotated

from pydantic import AfterValidator, PlainSerializer, PlainValidator
from pydantic_core import PydanticCustomError

from ..model import IPAddress

GSHUT = "65535:0"
WELL_KNOWN_COMMUNITIES = frozenset(
    {"no-export", "no-advertise", "no-export-subconfed", "nopeer", "no-peer", "blackhole"}
)
COMMUNITY_ALIASES = {"graceful-shutdown": GSHUT}  # normalised to the numeric form ExaBGP takes
EXTENDED_TYPES = frozenset({"target", "target4", "origin", "origin4", "redirect", "bandwidth"})
_U16 = 0xFFFF
_U32 = 0xFFFFFFFF
_HEX64 = re.compile(r"^0x[0-9a-fA-F]{16}$")
# RFC 9110 Host = uri-host [":" port]; uri-host = IP-literal / IPv4address / reg-name (RFC 3986)
_HOST_HEADER = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~%!$&'()*+,;=-]+)(:[0-9]{1,5})?")


def _error(kind: str, message: str, value: object) -> PydanticCustomError:
    return PydanticCustomError(kind, message, {"value": str(value)})


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise PydanticCustomError(
            "type_error",
            "expected {what} as a string, got {kind}",
            {"what": what, "kind": type(value).__name__},
        )
    return value


def parse_ip(value: object) -> IPAddress:
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return value
    text = _text(value, "an IP address")
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise _error("ip_address", "{value} is not a valid IP address", text) from None


def parse_ipv4(value: object) -> ipaddress.IPv4Address:
    address = parse_ip(value)
    if not isinstance(address, ipaddress.IPv4Address):
        raise _error("ipv4_address", "{value} is not an IPv4 address", address)
    return address


def parse_ipv6(value: object) -> ipaddress.IPv6Address:
    address = parse_ip(value)
    if not isinstance(address, ipaddress.IPv6Address):
        raise _error("ipv6_address", "{value} is not an IPv6 address", address)
    return address


def parse_vip(value: object) -> IPAddress:
    """A host address: ``10.0.0.1`` or ``10.0.0.1/32`` (``/128`` for IPv6), nothing wider."""
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        address: IPAddress = value
    else:
        text = _text(value, "a VIP")
        try:
            iface = ipaddress.ip_interface(text)
        except ValueError:
            raise _error("vip", "{value} is not a valid IP address", text) from None
        if iface.network.prefixlen != iface.max_prefixlen:
            raise _error("vip", "{value} is not a host address", text)
        address = iface.ip
    if address.is_unspecified or address.is_multicast or address.is_loopback:
        raise _error("vip", "{value} cannot be a VIP (unspecified, multicast or loopback)", address)
    return address


def check_community(value: str) -> str:
    low = value.lower()
    if low in COMMUNITY_ALIASES:
        return COMMUNITY_ALIASES[low]
    if low in WELL_KNOWN_COMMUNITIES:
        return low
    parts = value.split(":")
    if len(parts) == 2 and all(p.isdigit() and int(p) <= _U16 for p in parts):
        return value
    raise _error(
        "community",
        "{value} is not a BGP community (ASN:VALUE with both 0-65535, e.g. 65535:0, or one of "
        "no-export, no-advertise, no-export-subconfed, nopeer, blackhole, graceful-shutdown)",
        value,
    )


def check_large_community(value: str) -> str:
    parts = value.split(":")
    if len(parts) == 3 and all(p.isdigit() and int(p) <= _U32 for p in parts):
        return value
    raise _error(
        "large_community",
        "{value} is not a large community (GLOBAL:DATA1:DATA2, each 0-4294967295)",
        value,
    )


def check_extended_community(value: str) -> str:
    """The forms ExaBGP 5 parses: ``TYPE:A:B`` (``A:B`` = target), or ``0x`` + 16 hex digits."""
    if _HEX64.match(value):
        return value
    parts = value.split(":")
    if len(parts) == 2:
        parts = ["target", *parts]
    if len(parts) == 3 and parts[0] in EXTENDED_TYPES and _extended_ok(*parts):
        return value
    raise _error(
        "extended_community",
        "{value} is not an extended community (TYPE:A:B with TYPE one of "
        + ", ".join(sorted(EXTENDED_TYPES))
        + " and A, B decimal, e.g. bandwidth:65001:125000000 (bytes/s), or 0x + 16 hex digits)",
        value,
    )


def _extended_ok(kind: str, first: str, second: str) -> bool:
    if not second.isdigit():
        return False
    if kind in ("bandwidth", "redirect"):
        return first.isdigit() and int(first) <= _U16 and int(second) <= _U32
    four_byte = kind.endswith("4") or not first.isdigit() or int(first) > _U16
    if not _is_ipv4_or_u32(first):
        return False
    return int(second) <= (_U16 if four_byte else _U32)


def _is_ipv4_or_u32(text: str) -> bool:
    if text.isdigit():
        return int(text) <= _U32
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def check_host_header(value: str) -> str:
    """An http check's ``host``: sent as the request's Host header (and the TLS server name),
    so one line of visible ASCII: ``name``, ``10.0.0.1``, ``[2001:db8::1]``, each with an
    optional ``:port``. Empty means the default (the target's address:port)."""
    if not value:
        return value
    for char in value:
        if unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp"):  # C0, DEL, C1, U+2028...
            raise PydanticCustomError(
                "control_character",
                "contains a control character (U+{code}): a Host header is one line",
                {"code": f"{ord(char):04X}"},
            )
    match = _HOST_HEADER.fullmatch(value)
    if match is None or (match[2] is not None and int(match[2][1:]) > _U16):
        raise _error(
            "host_header",
            "'{value}' is not a valid Host header (a host name, IPv4 address or [IPv6 "
            "address], optionally :port, in ASCII without spaces; an internationalised name "
            "in its xn-- form)",
            value,
        )
    return value


_as_text = PlainSerializer(str, when_used="json")

IPAddr = Annotated[IPAddress, PlainValidator(parse_ip), _as_text]
IPv4Addr = Annotated[ipaddress.IPv4Address, PlainValidator(parse_ipv4), _as_text]
IPv6Addr = Annotated[ipaddress.IPv6Address, PlainValidator(parse_ipv6), _as_text]
Vip = Annotated[IPAddress, PlainValidator(parse_vip), _as_text]
Community = Annotated[str, AfterValidator(check_community)]
LargeCommunity = Annotated[str, AfterValidator(check_large_community)]
ExtendedCommunity = Annotated[str, AfterValidator(check_extended_community)]
HostHeader = Annotated[str, AfterValidator(check_host_header)]
