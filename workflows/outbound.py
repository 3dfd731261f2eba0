"""Outbound HTTP to URLs that users wrote (http and llm steps, completion
callbacks): the address filter against server-side request forgery.

Every TCP connection such a client opens is checked on the address it actually
connects to: the host is resolved once, each resolved address is checked, and
the socket is connected to that checked address (never resolved again, so DNS
rebinding has no gap), then its peer address is checked once more. Redirects
open new connections through the same check. Refused unless listed in
``IOLINKER_OUTBOUND_ALLOW`` (CIDRs): loopback, private, link-local, unique-local,
shared (CGNAT), multicast, unspecified, reserved and documentation addresses,
and those forms hidden in IPv6 (IPv4-mapped ``::ffff:127.0.0.1``, NAT64, 6to4,
Teredo). Proxies from the environment are not used (a proxy would connect for
us, unchecked).
"""

import ipaddress
import socket

import httpcore
import httpx
from django.conf import settings

# Well-known and local-use NAT64 prefixes (RFC 6052, RFC 8215): the IPv4 address they carry is
# what such an address reaches.
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


class OutboundRefused(Exception):
    """A connection to an address the filter refuses; the message says which."""


def _candidates(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> list:
    """The address and every IPv4 address it carries (that is what it reaches)."""
    if address.version == 4:
        return [address]
    if address.ipv4_mapped is not None:
        return [address.ipv4_mapped]
    found = [address]
    if any(address in net for net in _NAT64):
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.append(address.teredo[1])
    return found


def _kind(address) -> str:
    for name in ("loopback", "link_local", "multicast", "unspecified", "private", "reserved"):
        if getattr(address, f"is_{name}", False):
            return name.replace("_", "-")
    return "non-public"


def address_refusal(ip: str) -> str | None:
    """Why the filter refuses a connection to ``ip`` (None: allowed)."""
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])  # drop an IPv6 zone
    except ValueError:
        return f"{ip!r} is not an IP address"
    candidates = _candidates(address)
    allowed = settings.IOLINKER_OUTBOUND_ALLOW
    if any(c in net for c in candidates for net in allowed if c.version == net.version):
        return None
    for candidate in reversed(candidates):  # what it reaches names the refusal
        # is_global misses some on Python 3.11 (IPv4-compatible ::a.b.c.d, site-local fec0::/10).
        if (
            not candidate.is_global
            or candidate.is_multicast
            or candidate.is_reserved
            or getattr(candidate, "is_site_local", False)
        ):
            return (
                f"{address} is a {_kind(candidate)} address: outbound requests go only "
                "to public addresses unless IOLINKER_OUTBOUND_ALLOW lists it"
            )
    return None


class _CheckedBackend(httpcore.SyncBackend):
    """httpcore's socket backend, connecting only to addresses the filter allows."""

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        try:
            resolved = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise httpcore.ConnectError(f"cannot resolve {host!r}: {exc}") from None
        refusal, last_error = None, None
        for _family, _type, _proto, _name, sockaddr in resolved:
            ip = sockaddr[0]
            reason = address_refusal(ip)
            if reason is not None:
                refusal = refusal or reason
                continue
            try:
                stream = super().connect_tcp(
                    ip,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except httpcore.ConnectError as exc:  # try the next allowed address
                last_error = exc
                continue
            peer = stream.get_extra_info("socket").getpeername()[0]
            if (reason := address_refusal(peer)) is not None:
                stream.close()
                raise OutboundRefused(reason)
            return stream
        if last_error is not None:
            raise last_error
        raise OutboundRefused(refusal or f"{host!r} resolves to no address")


def outbound_client(*, timeout: float, follow_redirects: bool) -> httpx.Client:
    """An httpx client whose every connection goes through the address filter.
    Its errors are httpx's, plus OutboundRefused for a refused address."""
    transport = httpx.HTTPTransport()
    # httpx builds its httpcore pool without a way to pass a network backend;
    # tests/test_outbound.py proves the refusal holds, so a change here shows.
    transport._pool._network_backend = _CheckedBackend()
    return httpx.Client(
        timeout=timeout, follow_redirects=follow_redirects, transport=transport, trust_env=False
    )
