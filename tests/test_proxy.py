"""The outage proxy the fault tests stand in front of a tracking server: down, it must reset what
is open at once, as a server that stopped does, or a test measures its client's timeout instead."""

from __future__ import annotations

import http.server
import threading

import pytest
import requests
from proxy import FlakyProxy


@pytest.fixture
def slow_server():
    """An HTTP server whose answer waits until the test releases it."""
    arrived, release = threading.Event(), threading.Event()

    class Answer(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):  # the name http.server calls
            arrived.set()
            release.wait(30)
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request, client_address):
            pass  # its answer to a reset connection fails: expected here

    server = Server(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server, arrived, release
    release.set()
    server.shutdown()
    server.server_close()


def test_a_request_in_flight_when_the_proxy_goes_down_is_reset_not_left_waiting(slow_server):
    server, arrived, release = slow_server
    proxy = FlakyProxy(server.server_address[1])

    def go_down_mid_request():
        arrived.wait(30)
        proxy.down()
        release.set()

    threading.Thread(target=go_down_mid_request, daemon=True).start()
    # A reset is a ConnectionError; a connection left open would end in a ReadTimeout.
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{proxy.port}/", timeout=20)
    proxy.up()  # the server's answers are released now: the next one comes at once
    assert requests.get(f"http://127.0.0.1:{proxy.port}/", timeout=20).text == "ok"
