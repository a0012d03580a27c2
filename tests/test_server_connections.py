"""config/gunicorn.py closes a keep-alive connection after WEB_KEEPALIVE_REQUESTS requests, so that
a client's pool of connections, all accepted by one worker, spreads over the workers again
(BENCHMARKS.md, "load: connections over the workers")."""

import http.client

from tests.servers import gunicorn_server


def test_a_keep_alive_connection_is_closed_after_its_requests_and_the_client_carries_on(
    transactional_db, tmp_path
) -> None:
    with gunicorn_server(tmp_path, workers=2, env={"WEB_KEEPALIVE_REQUESTS": "3"}) as port:
        client = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        answers = []
        sockets = set()
        for _ in range(7):
            client.request("GET", "/healthz")
            sockets.add(client.sock.getsockname())
            response = client.getresponse()
            response.read()
            answers.append((response.status, response.getheader("Connection")))
        client.close()

    assert answers == [
        (200, "keep-alive"),
        (200, "keep-alive"),
        (200, "close"),  # the third request of the connection: the client opens a new one
        (200, "keep-alive"),
        (200, "keep-alive"),
        (200, "close"),
        (200, "keep-alive"),
    ]
    assert len(sockets) == 3  # three connections, from three local ports
