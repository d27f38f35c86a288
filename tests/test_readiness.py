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


def test_a_descriptor_number_taken_again_is_polled_as_the_socket_that_has_it_now():
    """A closed connection's descriptor number goes to the next socket opened: what was polled on
    it before (data, then EOF) says nothing of the new socket."""
    ours, theirs = socket.socketpair()
    fd = ours.fileno()
    theirs.send(b"x")
    theirs.close()
    assert readable_now(fd)
    ours.close()
    again, other = socket.socketpair()
    try:
        assert again.fileno() == fd or other.fileno() == fd  # the lowest free number is taken
        polled, peer = (again, other) if again.fileno() == fd else (other, again)
        assert not readable_now(fd)
        peer.send(b"y")
        assert readable_now(fd)
        polled.recv(1)
        assert not readable_now(fd)
    finally:
        again.close()
        other.close()
