"""The zero-timeout socket poll of ``check="auto"``: readable on data, EOF and a closed descriptor."""

from __future__ import annotations

import socket

from hybridpool.readiness import readable_now


def test_readable_now_tells_data_eof_and_a_closed_descriptor():
    ours, theirs = socket.socketpair()
    assert not readable_now(ours.fileno())
    theirs.send(b"x")
    assert readable_now(ours.fileno())
    ours.recv(1)
    assert not readable_now(ours.fileno())
    theirs.close()
    assert readable_now(ours.fileno())  # EOF: what a terminated backend leaves
    fd = ours.fileno()
    ours.close()
    assert readable_now(fd)  # not open: the check's round trip then finds the connection broken
