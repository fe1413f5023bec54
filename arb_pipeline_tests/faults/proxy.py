"""A TCP relay between the sender and sshd that can slow, stall or cut the link on demand.

A fault proxy in the style of toxiproxy, small enough to read: each accepted connection
gets two pump threads; ``rate`` limits bytes per second in each direction (so an upload of
a few hundred kB lasts long enough to be interrupted), ``stall()`` stops relaying on the
open connections while keeping their sockets open (a peer that says nothing), ``cut()``
closes them. New connections after a stall pass normally, as they would after a network
blip: that is what lets a retry succeed.
"""

from __future__ import annotations

import socket
import threading
import time


class FaultProxy:
    def __init__(self, target_port: int, *, target_host: str = "127.0.0.1", rate: float | None = None):
        self.target = (target_host, target_port)
        self.rate = rate  # bytes/s per direction; None: as fast as it goes
        self.connections = 0  # accepted so far
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: list[tuple[socket.socket, socket.socket, threading.Event]] = []
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True, name="fault-proxy").start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            stalled = threading.Event()
            with self._lock:
                self.connections += 1
                self._open.append((client, server, stalled))
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst, stalled), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, stalled: threading.Event) -> None:
        chunk = 4096
        try:
            while True:
                data = src.recv(chunk)
                if not data:
                    break
                while stalled.is_set() and not self._closed.is_set():
                    time.sleep(0.05)  # hold the bytes: the peer sees silence, not an error
                if self._closed.is_set():
                    break
                dst.sendall(data)
                if self.rate:
                    time.sleep(len(data) / self.rate)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stall(self) -> None:
        """Stop relaying on every open connection; sockets stay open."""
        with self._lock:
            for _, _, stalled in self._open:
                stalled.set()

    def cut(self) -> None:
        """Close every open connection."""
        with self._lock:
            for client, server, _ in self._open:
                for s in (client, server):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    s.close()
            self._open.clear()

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        self.cut()
