"""The systemd notify protocol: datagrams to $NOTIFY_SOCKET. No dependency needed."""

from __future__ import annotations

import os
import socket
import time


def notify(message: str) -> bool:
    """Send ``message`` (e.g. "READY=1") if systemd asked for it; False otherwise."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        # Non-blocking: a datagram queue that nobody drains (max_dgram_qlen is
        # only 10) must cost us a dropped message, never a frozen event loop.
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
        return True
    except OSError:
        return False


def reloading() -> bool:
    monotonic_usec = int(time.clock_gettime(time.CLOCK_MONOTONIC) * 1_000_000)
    return notify(f"RELOADING=1\nMONOTONIC_USEC={monotonic_usec}")


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings (half of $WATCHDOG_USEC), or None."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2_000_000
    except ValueError:
        return None
