#!/usr/bin/env python3
"""Edge hardening figures (SPEC section 11), sluice release build on loopback.

  greeting   greeting latency of fresh clients while two messages, each with a
             crafted PDF attachment (26 MB, ~1.4 million empty streams), are
             being scanned by a stamp_scan rule              (target < 100 ms)
  memory     peak RSS of the node while 40 clients send a 30 MB message each
             at the same time, relayed to smtp-sink          (target < 512 MB)
  idle       sessions held and RSS with 10,000 idle connections, from 200
             client addresses (50 each: the per-address default)  (< 200 MB)

  bench/edge.py                 # all three
  bench/edge.py greeting idle   # some
  SLUICE_BIN=target/release/sluice bench/edge.py   # skip the build

Prints figures; asserts nothing (speed targets are not tests). Uses
127.0.202.0/24 and 127.0.203.0/24, which no integration test uses.
"""

import base64
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

NODE_IP = "127.0.202.1"
SINK_IP = "127.0.202.2"
CLIENT_NET = "127.0.203."
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port(ip):
    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


def wait_port(ip, port, seconds):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            socket.create_connection((ip, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"edge.py: nothing listens on {ip}:{port}")


def proc_status(pid, field):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def mb(octets):
    return f"{octets / 1e6:.0f} MB"


class Sink:
    """smtp-sink as smart host: counts what the node relays."""

    def __init__(self, work):
        self.port = free_port(SINK_IP)
        self.log = open(os.path.join(work, "sink.log"), "w+")
        user = ["-u", "root"] if os.getuid() == 0 else []
        self.process = subprocess.Popen(
            ["/usr/sbin/smtp-sink", "-c", *user, f"{SINK_IP}:{self.port}", "1024"],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_port(SINK_IP, self.port, 10)

    def count(self):
        self.log.flush()
        with open(self.log.name) as log:
            found = re.findall(r"mesg=(\d+)", log.read().replace("\r", "\n"))
        return int(found[-1]) if found else 0

    def stop(self):
        self.process.kill()
        self.process.wait()


class Node:
    """`sluice serve` with a node.toml and objects applied through the CLI."""

    def __init__(self, binary, work, name, smtp_extra="", objects="", dlp=""):
        self.binary = binary
        self.dir = os.path.join(work, name)
        os.makedirs(self.dir)
        self.port = free_port(NODE_IP)
        admin = free_port(NODE_IP)
        self.config = os.path.join(self.dir, "node.toml")
        with open(self.config, "w") as f:
            f.write(
                f'[node]\nhostname = "bench.contoso.test"\ndata_dir = "{self.dir}/data"\n\n'
                f'[smtp]\nlisten = ["{NODE_IP}:{self.port}"]\n{smtp_extra}\n'
                f'[admin]\nlisten = "{NODE_IP}:{admin}"\n'
            )
            if dlp:
                f.write(f"\n[dlp]\n{dlp}\n")
        self.log = open(os.path.join(self.dir, "serve.log"), "w")
        self.process = subprocess.Popen(
            [binary, "serve", "--config", self.config],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "RUST_LOG": "warn"},
        )
        wait_port(NODE_IP, self.port, 30)
        token = os.path.join(self.dir, "data", "admin.token")
        deadline = time.time() + 30
        while not (os.path.exists(token) and os.path.getsize(token) > 0):
            if time.time() > deadline:
                raise SystemExit("edge.py: no admin.token")
            time.sleep(0.1)
        if objects:
            path = os.path.join(self.dir, "objects.toml")
            with open(path, "w") as f:
                f.write(objects)
            subprocess.run(
                [binary, "apply", "-f", path, "--config", self.config],
                check=True,
                stdout=subprocess.DEVNULL,
            )

    def rss(self):
        return proc_status(self.process.pid, "VmRSS")

    def peak_rss(self):
        return proc_status(self.process.pid, "VmHWM")

    def stop(self):
        self.process.kill()
        self.process.wait()


def read_reply(sock_file):
    lines = []
    while True:
        line = sock_file.readline()
        if not line:
            raise ConnectionError("closed: " + "".join(lines))
        lines.append(line)
        if len(line) < 4 or line[3] != "-":
            return int(line[:3]), "".join(lines)


def connect(ip, port, source=None, timeout=600):
    sock = socket.socket()
    if source:
        sock.bind((source, 0))
    sock.settimeout(timeout)
    sock.connect((ip, port))
    return sock


def send_message(ip, port, source, content, results, index, sent=None):
    """One transaction; records (reply code, seconds from end of data to reply),
    code 0 when the connection failed (the error is printed)."""
    try:
        transaction(ip, port, source, content, results, index, sent)
    except (OSError, ConnectionError) as error:
        print(f"  client {index}: {error}", file=sys.stderr)
        results[index] = (0, 0.0)
        if sent is not None:
            sent.release()


def transaction(ip, port, source, content, results, index, sent):
    sock = connect(ip, port, source)
    reader = sock.makefile("r", encoding="latin-1", newline="\n")
    read_reply(reader)
    for command in ["EHLO load.test", "MAIL FROM:<load@fabrikam.test>", "RCPT TO:<bob@contoso.test>", "DATA"]:
        sock.sendall(command.encode() + b"\r\n")
        code, text = read_reply(reader)
        if code >= 400:
            results[index] = (code, 0.0)
            sock.close()
            return
    sock.sendall(content)
    sock.sendall(b".\r\n")
    ended = time.time()
    if sent is not None:
        sent.release()
    code, _ = read_reply(reader)
    results[index] = (code, time.time() - ended)
    sock.sendall(b"QUIT\r\n")
    sock.close()


def mime(attachment_name, content_type, data, subject):
    encoded = base64.encodebytes(data).replace(b"\n", b"\r\n")
    return (
        f"From: <load@fabrikam.test>\r\nTo: <bob@contoso.test>\r\nSubject: {subject}\r\n"
        f"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n"
        f"--b\r\nContent-Type: text/plain\r\n\r\nattached\r\n"
        f"--b\r\nContent-Type: {content_type}; name=\"{attachment_name}\"\r\n"
        f"Content-Disposition: attachment; filename=\"{attachment_name}\"\r\n"
        f"Content-Transfer-Encoding: base64\r\n\r\n"
    ).encode() + encoded + b"--b--\r\n"


def crafted_pdf(size):
    """Empty streams without object headers: before the extractor was bounded,
    each cost a search of kilobytes for its dictionary (17-39 s per file)."""
    unit = b"<<>>\nstream\n(x) Tj\nendstream\n"
    return b"%PDF-1.4\n" + unit * (size // len(unit)) + b"%%EOF\n"


def bench_greeting(binary, work):
    print("greeting latency while two crafted 26 MB PDFs are scanned")
    node = Node(
        binary,
        work,
        "greeting",
        smtp_extra='max_message_size = "60MB"\n',
        objects=(
            '[[accepted_domain]]\nname = "contoso.test"\n\n'
            '[[rule]]\nname = "Scan everything"\n[rule.actions]\nstamp_scan = true\n'
        ),
    )
    try:
        content = mime("report.pdf", "application/pdf", crafted_pdf(26_000_000), "crafted")
        results = [None, None]
        sent = threading.Semaphore(0)
        senders = [
            threading.Thread(
                target=send_message,
                args=(NODE_IP, node.port, f"{CLIENT_NET}{10 + n}", content, results, n, sent),
            )
            for n in range(2)
        ]
        for thread in senders:
            thread.start()
        sent.acquire()
        sent.acquire()
        latencies = []
        pending_at_each = []
        while any(thread.is_alive() for thread in senders) and len(latencies) < 200:
            started = time.time()
            sock = connect(NODE_IP, node.port, f"{CLIENT_NET}20", timeout=120)
            reader = sock.makefile("r", encoding="latin-1", newline="\n")
            code, _ = read_reply(reader)
            latencies.append(time.time() - started)
            pending_at_each.append(sum(1 for r in results if r is None))
            sock.sendall(b"QUIT\r\n")
            sock.close()
            time.sleep(0.05)
        for thread in senders:
            thread.join()
        during = [l for l, pending in zip(latencies, pending_at_each) if pending > 0]
        print(f"  message size            {mb(len(content))} each (PDF 26 MB)")
        print(f"  replies to end of data  {', '.join(f'{code} after {secs:.2f} s' for code, secs in results)}")
        if during:
            print(f"  greetings during scans  {len(during)}")
            print(f"  greeting latency        median {statistics.median(during) * 1000:.1f} ms, max {max(during) * 1000:.1f} ms")
        else:
            print("  no greeting measured while the scans ran (they ended first)")
        print(f"  node peak RSS           {mb(node.peak_rss())}")
    finally:
        node.stop()


def bench_memory(binary, work, sessions=40, size=30_000_000):
    print(f"peak RSS with {sessions} concurrent {size // 1_000_000} MB messages, relayed to smtp-sink")
    sink = Sink(work)
    node = Node(
        binary,
        work,
        "memory",
        objects=(
            '[[accepted_domain]]\nname = "contoso.test"\ntype = "internal_relay"\n\n'
            f'[[outbound_connector]]\nname = "Sink"\nrecipient_domains = ["contoso.test"]\n'
            f'smart_hosts = ["{SINK_IP}:{sink.port}"]\n'
        ),
    )
    try:
        raw = os.urandom(size * 3 // 4 - 200_000)
        content = mime("archive.bin", "application/octet-stream", raw, "large")
        results = [None] * sessions
        started = time.time()
        senders = [
            threading.Thread(
                target=send_message,
                args=(NODE_IP, node.port, f"{CLIENT_NET}{10 + n % 40}", content, results, n),
            )
            for n in range(sessions)
        ]
        peak_sampled = 0
        for thread in senders:
            thread.start()
        while any(thread.is_alive() for thread in senders):
            peak_sampled = max(peak_sampled, node.rss())
            time.sleep(0.05)
        accepted = time.time() - started
        deadline = time.time() + 600
        while sink.count() < sessions and time.time() < deadline:
            peak_sampled = max(peak_sampled, node.rss())
            time.sleep(0.1)
        relayed = time.time() - started
        codes = sorted({code for code, _ in results})
        print(f"  message size            {mb(len(content))}")
        print(f"  replies                 {codes} ({sum(1 for c, _ in results if c == 250)}/{sessions} accepted in {accepted:.1f} s)")
        print(f"  relayed to the sink     {sink.count()}/{sessions} after {relayed:.1f} s")
        print(f"  node peak RSS (VmHWM)   {mb(node.peak_rss())}")
    finally:
        node.stop()
        sink.stop()


def bench_idle(binary, work, connections=10_000):
    print(f"{connections} idle connections (50 per client address, the default limit)")
    node = Node(binary, work, "idle", objects='[[accepted_domain]]\nname = "contoso.test"\n')
    socks = []
    try:
        baseline = node.rss()
        greeted = 0
        refused = 0
        for n in range(connections):
            sock = connect(NODE_IP, node.port, f"{CLIENT_NET}{10 + n // 50}", timeout=30)
            reply = sock.recv(512)
            if reply.startswith(b"220"):
                greeted += 1
                socks.append(sock)
            else:
                refused += 1
                sock.close()
        time.sleep(2)
        print(f"  sessions greeted        {greeted} (refused {refused})")
        print(f"  node RSS                {mb(node.rss())} (before: {mb(baseline)}; peak {mb(node.peak_rss())})")
        probe = connect(NODE_IP, node.port, f"{CLIENT_NET}250", timeout=30)
        print(f"  one more connection     {probe.recv(512).decode(errors='replace').strip()}")
        probe.close()
    finally:
        for sock in socks:
            sock.close()
        node.stop()


def main():
    wanted = sys.argv[1:] or ["greeting", "memory", "idle"]
    binary = os.environ.get("SLUICE_BIN")
    if not binary:
        print("edge.py: building sluice (release)", file=sys.stderr)
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "sluice", "--bin", "sluice"], cwd=ROOT, check=True)
        target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
        binary = os.path.join(target, "release", "sluice")
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print(f"edge benchmark: sluice release, loopback, {os.cpu_count()} cores")
    work = tempfile.mkdtemp(prefix="sluice-edge.")
    try:
        for name in wanted:
            {"greeting": bench_greeting, "memory": bench_memory, "idle": bench_idle}[name](binary, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
