"""A TCP proxy on 127.0.0.1 that makes every new connection to PostgreSQL slow to open.

``python -m bench.proxy TARGET [--delay 0.15] [--seconds 120]`` listens on a free port of
127.0.0.1, prints it on stdout, and for each accepted connection waits ``--delay`` seconds before
connecting onward to ``TARGET`` (a UNIX socket path, or ``host:port``), then copies bytes both ways
until either side closes. It stops after ``--seconds``, and refuses connections beyond
:data:`MAX_CONNECTIONS`. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

#: Connections served at once at most; more are closed on arrival.
MAX_CONNECTIONS = 200
#: Bytes read at a time.
CHUNK = 65536


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy ``reader`` to ``writer`` until end of file, then close ``writer``."""
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def _open_target(target: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if target.startswith("/"):
        return await asyncio.open_unix_connection(target)
    host, _, port = target.rpartition(":")
    return await asyncio.open_connection(host, int(port))


async def serve(target: str, delay: float, seconds: float) -> None:
    """Proxy 127.0.0.1:<free port> to ``target`` with ``delay`` seconds before each connect onward,
    for ``seconds``; print the port once listening."""
    active = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal active
        if active >= MAX_CONNECTIONS:
            writer.close()
            return
        active += 1
        try:
            await asyncio.sleep(delay)
            up_reader, up_writer = await _open_target(target)
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except OSError:
            writer.close()
        finally:
            active -= 1

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    print(port, flush=True)
    async with server:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(server.serve_forever(), seconds)


def main(argv: list[str] | None = None) -> None:
    """Run the proxy from the command line."""
    parser = argparse.ArgumentParser(prog="python -m bench.proxy", description=__doc__.split("\n")[0])
    parser.add_argument("target", help="a UNIX socket path, or host:port, of the PostgreSQL server")
    parser.add_argument("--delay", type=float, default=0.15, help="seconds before connecting onward (%(default)s)")
    parser.add_argument("--seconds", type=float, default=120.0, help="stop after this long (%(default)s)")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.target, args.delay, args.seconds))


if __name__ == "__main__":
    main()
