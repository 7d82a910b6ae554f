"""A TCP proxy in front of a real server, for outages on cue: down, it resets the open
connections and every new one (as a server that stopped or restarted), and counts the new ones
(``turned_away``: the client has met the outage); up, it answers again on the same port. The
server behind it never notices. ``refuse(path)`` keeps it up but resets every HTTP request for
``path``, as a server that cannot write an upload (its disk full) does."""

from __future__ import annotations

import contextlib
import socket
import threading

from helpers import free_port


class FlakyProxy:
    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.port = free_port()
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.refused: bytes | None = None
        self._down = False
        self.turned_away = 0  # connections reset on arrival since the last down()
        # One listener for the proxy's life: down, it accepts only to reset (and count), so a
        # test can wait until the client has really met the outage, however slow the machine.
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", self.port))
        self._listener.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()

    def refuse(self, path: str | None) -> None:
        """Reset the connection of each request whose first line names ``path`` (None: none)."""
        self.refused = path.encode() if path else None

    def up(self) -> None:
        self._down = False

    def down(self) -> None:
        """Reset the open connections, and from now on every new one."""
        with self._lock:
            self.turned_away = 0
            self._down = True
            self._reset(*self._open)

    def _reset(self, *sockets: socket.socket) -> None:
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
                # A pump may be blocked reading this socket, and a close does not wake it: the
                # socket would stay open, silent, until that read returned (a request in flight
                # then waits out its client's timeout). Shutting its reading side wakes it.
                sock.shutdown(socket.SHUT_RD)
                sock.close()  # with a zero linger: a reset, as a crashed server sends
        self._open.difference_update(sockets)

    def _accept(self) -> None:
        while True:
            client, _ = self._listener.accept()
            with self._lock:
                if self._down:
                    self.turned_away += 1
                    self._reset(client)
                    continue
            try:
                server = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open.update((client, server))
            for source, sink, requests in ((client, server, True), (server, client, False)):
                threading.Thread(target=self._pump, args=(source, sink, requests),
                                 daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, requests: bool) -> None:
        try:
            while data := source.recv(65536):
                if requests and self.refused and self.refused in data.split(b"\r\n", 1)[0]:
                    with self._lock:
                        self._reset(source, sink)
                    return
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                # A connection this proxy reset is no longer open: no orderly end after its reset.
                for sock in {source, sink} & self._open:
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
                self._open.discard(source)
