"""Source-address rules shared by the socket listeners (MLLP, DICOM)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def address_in(host: str, networks: Iterable[Network]) -> bool:
    """Whether the peer address ``host`` (an IP, maybe with an IPv6 zone) is in one of ``networks``;
    an IPv4-mapped IPv6 address is matched as IPv4. An unparsable address is in none."""
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return any(addr in net for net in networks)
