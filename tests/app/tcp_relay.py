"""A real TCP relay between the console and a daemon that can stall a live connection.

Why it exists: the hub's DEGRADED state is about a node whose TCP connection stays open while
nothing arrives on it (a hung daemon, a black-holed route). Stopping a daemon closes its
sockets, which is OFFLINE, not that. `TcpRelay.pause()` stops forwarding bytes in both
directions and keeps every connection open (new ones are accepted and held too);
`resume()` lets the held bytes through. Plain sockets and threads, no grpc knowledge.
"""

from __future__ import annotations

import socket
import threading

_CHUNK = 65536


class TcpRelay:
    """Listens on 127.0.0.1:<port 0> and forwards each accepted connection to `target`."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self.connections = 0          # accepted so far (a reconnect shows as a new one)
        self._spawn(self._accept_loop)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def paused(self) -> bool:
        return not self._flowing.is_set()

    def pause(self) -> None:
        """Stops forwarding in both directions; connections stay open."""
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def close(self) -> None:
        """Closes the listener and every relayed connection and joins the threads."""
        self._closed.set()
        self._flowing.set()
        with self._lock:
            socks, self._sockets = self._sockets, []
            threads = list(self._threads)
        for s in [self._listener, *socks]:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        for t in threads:
            if t is not threading.current_thread():
                t.join(5.0)

    def __enter__(self) -> "TcpRelay":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    # --- threads ---------------------------------------------------------------------------

    def _spawn(self, fn, *args) -> None:
        t = threading.Thread(target=fn, args=args, name="tcp-relay", daemon=True)
        with self._lock:
            self._threads.append(t)
        t.start()

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5.0)
            except OSError:
                client.close()
                continue
            for s in (client, upstream):
                s.settimeout(0.1)   # pumps wake up to notice pause/close
            with self._lock:
                if self._closed.is_set():
                    client.close()
                    upstream.close()
                    return
                self._sockets += [client, upstream]
                self.connections += 1
            self._spawn(self._pump, client, upstream)
            self._spawn(self._pump, upstream, client)

    def _wait_flowing(self) -> bool:
        """Blocks while paused; False once the relay is closed."""
        while not self._flowing.wait(0.1):
            if self._closed.is_set():
                return False
        return not self._closed.is_set()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while self._wait_flowing():
                try:
                    data = src.recv(_CHUNK)
                except TimeoutError:
                    continue
                if not data:
                    dst.shutdown(socket.SHUT_WR)   # pass the half-close on
                    return
                if not self._wait_flowing():       # paused while this chunk was read: hold it
                    return
                view = memoryview(data)
                while view:
                    try:
                        view = view[dst.send(view):]
                    except TimeoutError:
                        if not self._wait_flowing():
                            return
        except OSError:   # the other side reset or we were closed
            try:
                dst.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
