"""A PostgreSQL wire proxy for fault injection, on the test's own event loop.

It refuses TLS (answers an SSL or GSS request with ``N``, so clients go on in
plain text and the proxy can read the protocol), reads each connection's
``application_name`` from its startup message, and, for connections of one
application only (the syncer's), can be armed to:

- ``refuse``: close the connection right after its startup message;
- ``cut_before_commit``: close both sides when the client sends ``COMMIT``
  (the server rolls back);
- ``cut_after_commit``: forward ``COMMIT``, then swallow the server's
  ``CommandComplete`` and close (committed, but the client cannot know).

Each armed fault fires once.
"""

from __future__ import annotations

import asyncio
import struct

SSL_REQUEST = 80877103
GSS_REQUEST = 80877104


class Proxy:
    def __init__(self, host: str, port: int, target_app: str = "ringmetrics-syncer") -> None:
        self.host, self.port = host, port
        self.target_app = target_app
        self.armed: list[str] = []
        self.fired: list[str] = []
        self.server: asyncio.base_events.Server | None = None
        self.listen_port = 0

    async def start(self) -> Proxy:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.listen_port = self.server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    def arm(self, fault: str) -> None:
        assert fault in ("refuse", "cut_before_commit", "cut_after_commit"), fault
        self.armed.append(fault)

    def _take(self, fault: str) -> bool:
        if self.armed and self.armed[0] == fault:
            self.fired.append(self.armed.pop(0))
            return True
        return False

    async def _serve(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        swriter = None
        try:
            startup = await self._startup(creader, cwriter)
            targeted = _params(startup).get("application_name") == self.target_app
            if targeted and self._take("refuse"):
                return
            sreader, swriter = await asyncio.open_connection(self.host, self.port)
            swriter.write(startup)
            await self._relay(creader, cwriter, sreader, swriter, targeted)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for w in (cwriter, swriter):
                if w is not None:
                    w.close()
                    try:
                        await w.wait_closed()
                    except OSError:
                        pass

    async def _relay(self, creader, cwriter, sreader, swriter, targeted: bool) -> None:
        cut_reply = asyncio.Event()

        async def client_to_server() -> None:
            while True:
                head = await creader.readexactly(5)
                body = await creader.readexactly(struct.unpack("!I", head[1:])[0] - 4)
                if targeted and head[:1] == b"Q" and body[:6].upper() == b"COMMIT":
                    if self._take("cut_before_commit"):
                        return
                    if self._take("cut_after_commit"):
                        cut_reply.set()
                swriter.write(head + body)
                await swriter.drain()

        async def server_to_client() -> None:
            while True:
                head = await sreader.readexactly(5)
                body = await sreader.readexactly(struct.unpack("!I", head[1:])[0] - 4)
                if cut_reply.is_set() and head[:1] == b"C" and body.startswith(b"COMMIT"):
                    return
                cwriter.write(head + body)
                await cwriter.drain()

        tasks = [asyncio.ensure_future(client_to_server()), asyncio.ensure_future(server_to_client())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _startup(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
        while True:
            head = await reader.readexactly(4)
            (length,) = struct.unpack("!I", head)
            body = await reader.readexactly(length - 4)
            code = struct.unpack("!I", body[:4])[0] if len(body) >= 4 else 0
            if code in (SSL_REQUEST, GSS_REQUEST):
                writer.write(b"N")
                await writer.drain()
                continue
            return head + body


def _params(startup: bytes) -> dict[str, str]:
    parts = startup[8:].split(b"\0")
    return {parts[i].decode(): parts[i + 1].decode() for i in range(0, len(parts) - 1, 2) if parts[i]}
