#!/usr/bin/env python3
"""HTTPS at the edge against nginx, in the same run: TLS handshakes
(full and resumed) and 2 KiB cache hits over TLS keep-alive.

    python benchmarks/tls.py                          # 3 rounds x 5 s a row, ECDSA P-256 and RSA 2048 (~7 minutes)
    python benchmarks/tls.py --rounds 5               # medians of 5 rounds (~12 minutes)
    python benchmarks/tls.py --keys ec256 --rounds 1 --duration 2    # a quick look
    python benchmarks/tls.py --profile resumed-1.2    # then perf and py-spy during one more run of that row

Both servers hold the same certificate (a leaf and its intermediate, made
here with ``cryptography``), speak TLS 1.2 and 1.3 with the same TLS 1.2
suites, issue session tickets and keep a session cache, and serve the same
2 KiB object from their cache (nginx: ``proxy_cache`` in front of the same
origin). Each row runs against the node and then nginx, round after round;
the tables give the median of the rounds, ratios of medians and the
server's CPU per operation.

Handshakes come from ``openssl s_time`` (C, the same OpenSSL as both
servers), ``--clients`` processes at once on the load core; each connects,
completes the handshake and closes, and prints one character per
connection (``r`` resumed, ``*`` not), which is how resumption is checked.
See benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as bench  # noqa: E402  the helpers of benchmarks/run.py: processes, pinning, wrk, tables

REPO = bench.REPO
sys.path.insert(0, str(REPO))

TENANT = "bench"
NAME = "bench.example"
HIT_PATH = "/2k/tls-hit"
NGINX = "/usr/sbin/nginx"
HITS_TARGET = 0.7  # TLS hits / plain hits of the same node
HANDSHAKE_TARGET = 0.5  # node handshakes / nginx handshakes

KEYS = {"ec256": "ECDSA P-256", "rsa2048": "RSA 2048"}


@dataclass(frozen=True)
class Case:
    """One handshake row: what ``openssl s_time`` is asked to do."""

    id: str
    label: str
    flags: tuple[str, ...]
    resumed: bool
    request: bool = False  # one 2 KiB hit on each connection (HTTP/1.0, then the server closes)


# TLS 1.3 tickets arrive after the handshake: s_time keeps a resumable
# session only when it reads from the connection, which -www does.
CASES = (
    Case("full-1.3", "full, TLS 1.3", ("-new",), resumed=False),
    Case("full-1.2", "full, TLS 1.2", ("-new", "-tls1_2"), resumed=False),
    Case("resumed-1.2", "resumed, TLS 1.2 (session ticket)", ("-reuse", "-tls1_2"), resumed=True),
    Case("full-1.3+hit", "full, TLS 1.3, + one 2 KiB hit", ("-new", "-www"), resumed=False, request=True),
    Case("resumed-1.3+hit", "resumed, TLS 1.3 (ticket), + one 2 KiB hit", ("-reuse", "-www"), resumed=True,
         request=True),
)


def log(msg: str) -> None:
    bench.log(f"tls: {msg}")


# --------------------------------------------------------------- certificates


@dataclass
class Certificate:
    chain: Path  # leaf, then intermediate
    key: Path  # PKCS#8, unencrypted
    root: Path  # the CA a verifying client trusts


def make_certificate(directory: Path, kind: str) -> Certificate:
    """A leaf for NAME under an intermediate under a root, as a CA issues it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.timezone.utc)

    def issue(common_name: str, private, issuer=None, issuer_key=None, names=None):
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        builder = (x509.CertificateBuilder().subject_name(subject)
                   .issuer_name(issuer.subject if issuer else subject)
                   .public_key(private.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
                   .add_extension(x509.BasicConstraints(ca=names is None, path_length=None), critical=True))
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        return builder.sign(issuer_key or private, hashes.SHA256())

    root_key, middle_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    leaf_key = ec.generate_private_key(ec.SECP256R1()) if kind == "ec256" else rsa.generate_private_key(65537, 2048)
    root = issue("edge bench root", root_key)
    middle = issue("edge bench intermediate", middle_key, root, root_key)
    leaf = issue(NAME, leaf_key, middle, middle_key, [NAME])
    pem = serialization.Encoding.PEM
    cert = Certificate(directory / f"{kind}-chain.pem", directory / f"{kind}-key.pem", directory / f"{kind}-root.pem")
    cert.chain.write_bytes(leaf.public_bytes(pem) + middle.public_bytes(pem))
    cert.key.write_bytes(leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    cert.key.chmod(0o600)
    cert.root.write_bytes(root.public_bytes(pem))
    return cert


# -------------------------------------------------------------------- servers


@dataclass
class Server:
    name: str  # "node" or "nginx"
    pid: int  # the process that does the work (nginx: its one worker)
    plain: str  # http://127.0.0.1:P
    tls: str  # https://127.0.0.1:P
    cache_header: str  # where a hit says so


def start_node(st: bench.Stack, origin_url: str, cert: Certificate, kind: str) -> Server:
    """The node from a config file, as production starts it: one tenant for
    every host, its certificate in the store as an upload puts it there, the
    same file as ``tls.default_certificate`` (s_time sends no server name)."""
    from edge.tls.certs import check_upload
    from edge.tls.store import CertificateStore

    home = st.dir / f"node-{kind}"
    (home / "policies").mkdir(parents=True)
    (home / "policies" / f"{TENANT}.json").write_text(json.dumps({"hosts": ["*"], "origins": [{"url": origin_url}]}))
    checked = check_upload(cert.chain.read_text(), cert.key.read_text(), dt.datetime.now(dt.timezone.utc))
    stored = CertificateStore(home / "certificates").put(TENANT, NAME, checked)
    (home / "edge.toml").write_text(
        f'[policies]\ndirectory = "policies"\nwatch_interval = 0\n\n[tls]\ndefault_certificate = "{stored.path}"\n')
    plain, tls = bench.free_port(), bench.free_port()
    cmd = [sys.executable, "-m", "edge", "serve", "--config", str(home / "edge.toml"), "--listen", f"127.0.0.1:{plain}",
           "--tls-listen", f"127.0.0.1:{tls}", "--workers", "1", "--no-access-log"]
    proc = st.start(f"node-{kind}", cmd, f"http://127.0.0.1:{plain}/__stats", bench.EDGE_CORE)
    return Server("node", proc.pid, f"http://127.0.0.1:{plain}", f"https://127.0.0.1:{tls}", "Cache-Status")


NGINX_CONF = """\
# Written by benchmarks/tls.py: the node's TLS settings (edge/tls/context.py),
# the same certificate, tickets and a session cache, 2 KiB hits from proxy_cache.
{user}worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    proxy_cache_path {dir}/cache keys_zone=bench:10m;
    keepalive_requests 1000000;  # the node never closes a busy keep-alive connection
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_ciphers {ciphers};
    ssl_prefer_server_ciphers off;
    ssl_session_cache shared:SSL:10m;
    ssl_session_tickets on;
    server {{
        listen 127.0.0.1:{plain};
        listen 127.0.0.1:{tls} ssl;
        ssl_certificate {chain};
        ssl_certificate_key {key};
        location / {{
            proxy_pass {origin};
            proxy_cache bench;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            add_header X-Cache-Status $upstream_cache_status;
        }}
    }}
}}
"""


def start_nginx(st: bench.Stack, origin_url: str, cert: Certificate, kind: str) -> Server:
    from edge.tls.context import CIPHERS_TLS12

    home = st.dir / f"nginx-{kind}"
    home.mkdir()
    plain, tls = bench.free_port(), bench.free_port()
    conf = home / "nginx.conf"
    # Started by root, nginx's workers would run as nobody, who cannot write the cache in our temp directory.
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf.write_text(NGINX_CONF.format(user=user, dir=home, ciphers=CIPHERS_TLS12, plain=plain, tls=tls, chain=cert.chain,
                                      key=cert.key, origin=origin_url))
    proc = st.start(f"nginx-{kind}", [NGINX, "-p", str(home), "-c", str(conf), "-e", str(home / "error.log")],
                    f"http://127.0.0.1:{plain}/__stats", bench.EDGE_CORE)
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    # Beside its worker, nginx runs a cache manager and loader, idle here.
    workers = [pid for pid in children if b"worker process" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    if len(workers) != 1:
        raise bench.BenchError(f"nginx: expected one worker process, found {workers}")
    return Server("nginx", int(workers[0]), f"http://127.0.0.1:{plain}", f"https://127.0.0.1:{tls}", "X-Cache-Status")


def require_tools() -> None:
    bench.require_wrk()
    if not os.access(NGINX, os.X_OK):
        raise bench.BenchError(f"{NGINX} is missing; install it with `apt-get install nginx-light`")
    if subprocess.run(["openssl", "version"], capture_output=True).returncode != 0:
        raise bench.BenchError("the openssl command is missing; install it with `apt-get install openssl`")


def get(url: str, context: ssl.SSLContext, host: str | None = None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=5.0, context=context) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def warm(server: Server, cert: Certificate) -> None:
    """The object is a hit on both listeners before anything is timed; over
    HTTPS the certificate is checked against its root."""
    context = ssl.create_default_context(cafile=str(cert.root))
    context.check_hostname = False  # an IP literal: no server name is sent, the default certificate answers
    # wrk sends Host: 127.0.0.1:PORT, s_time -www a request for NAME: the node keys its cache by host.
    for base, host in ((server.plain, None), (server.tls, None), (server.tls, NAME)):
        for _ in range(2):
            status, headers, body = get(base + HIT_PATH, context, host)
        mark = headers.get(server.cache_header, "")
        if status != 200 or body != bench.SMALL or "hit" not in mark.lower() or "fwd=" in mark:
            raise bench.BenchError(f"{server.name}: {base}{HIT_PATH} (Host {host or 'as in the URL'}) is not a hit "
                                   f"after warming: {status} {mark!r}")


# ------------------------------------------------------------------ handshakes


@dataclass
class Handshakes:
    rate: float  # handshakes completed per second
    resumed: int
    full: int
    cpu: float  # the server's CPU, 1.0 = one core
    other: float  # the rest of the machine's CPU


_S_TIME_COUNT = re.compile(rb"(\d+) connections in [\d.]+s;")
_S_TIME_BYTES = re.compile(rb"(\d+) bytes read per connection")
_S_TIME_MARKS = re.compile(rb"^[*rt3]+$", re.M)


def run_s_time(server: Server, case: Case, cert: Certificate, args) -> Handshakes:
    """``--clients`` s_time processes for ``--duration`` seconds; the rate is
    what they completed over the wall time they ran (s_time's own
    "connections/user sec" divides by the client's CPU time, not the wall's)."""
    host = server.tls.rsplit("/", 1)[1]
    # The client verifies the chain against its root, read once from a file
    # (the default trust directory would be searched on every handshake).
    cmd = ["openssl", "s_time", "-connect", host, *case.flags, "-time", str(args.duration), "-verify", "3",
           "-CAfile", str(cert.root), "-no-CApath", "-no-CAstore"]
    if case.request:
        # Absolute form: s_time sends no Host field, and HTTP/1.0 makes the server close after the answer.
        cmd.insert(cmd.index("-www") + 1, f"https://{NAME}{HIT_PATH}")
    with bench.CpuWatch({server.name: server.pid}) as cw:
        procs = [subprocess.Popen(bench.pinned(cmd, bench.LOAD_CORE), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for _ in range(args.clients)]
        outs = [p.communicate(timeout=args.duration + 60) for p in procs]
    full = resumed = 0
    for p, (out, err) in zip(procs, outs):
        counted, read = _S_TIME_COUNT.search(out), _S_TIME_BYTES.search(out)
        if p.returncode != 0 or counted is None or read is None or b"verify error" in err:
            raise bench.BenchError(f"s_time against {server.name} failed ({p.returncode}): {out[-500:]!r} {err[-500:]!r}")
        # One character per timed connection: "r" resumed, "*" a new session ("t", "3": older protocols).
        marks = b"".join(_S_TIME_MARKS.findall(out))
        if len(marks) != int(counted.group(1)):
            raise bench.BenchError(f"s_time against {server.name}: {len(marks)} marks for {counted.group(1)} connections")
        if case.request and int(read.group(1)) < len(bench.SMALL):
            raise bench.BenchError(f"s_time against {server.name}: {read.group(1)} bytes a connection, not the 2 KiB object")
        resumed += marks.count(b"r")
        full += len(marks) - marks.count(b"r")
    total = full + resumed
    if case.resumed and resumed < 0.99 * total:
        raise bench.BenchError(f"{server.name}, {case.label}: only {resumed} of {total} connections resumed")
    return Handshakes(total / cw.wall, resumed, full, cw.cpu[server.name], cw.other)


# ------------------------------------------------------------------------ hits


HIT_ROWS = (  # (server, listener, label)
    ("node", "plain", "node, plain HTTP"),
    ("node", "tls", "node, HTTPS"),
    ("nginx", "tls", "nginx, HTTPS"),
    ("nginx", "plain", "nginx, plain HTTP"),
)


def run_hits(server: Server, listener: str, st: bench.Stack, args) -> dict:
    url = (server.tls if listener == "tls" else server.plain) + HIT_PATH
    return bench.run_wrk(url, st.dir, duration=args.duration, watch={server.name: server.pid})


# ---------------------------------------------------------------------- report


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def spread(values: list[float], fmt: str = "{:,.0f}") -> str:
    """Median, with the lowest and highest round when there were several."""
    if len(values) < 2:
        return fmt.format(median(values))
    return f"{fmt.format(median(values))} ({fmt.format(min(values))} – {fmt.format(max(values))})"


def verdict(ratio: float, target: float) -> str:
    return f"{ratio:.2f}× {'**met**' if ratio >= target else '**NOT met**'} (≥ {target}×)"


def cpu_pct(values: list[float]) -> str:
    return f"{median(values) * 100:.0f}%"


@dataclass
class Results:
    hits: dict[str, list[dict]] = field(default_factory=dict)  # HIT_ROWS label -> wrk result per round
    handshakes: dict[tuple[str, str, str], list[Handshakes]] = field(default_factory=dict)  # (key, case, server)

    def add_hits(self, label: str, r: dict) -> None:
        self.hits.setdefault(label, []).append(r)

    def add_handshakes(self, kind: str, case: Case, server: str, h: Handshakes) -> None:
        self.handshakes.setdefault((kind, case.id, server), []).append(h)


def per_core(rate: float, cpu: float) -> float:
    """Operations per CPU-second of the server."""
    return rate / cpu if cpu > 0 else 0.0


def hits_table(res: Results, args, kind: str) -> str:
    def rps(label: str) -> list[float]:
        return [r["rps"] for r in res.hits[label]]

    def core(label: str) -> list[float]:
        name = label.split(",")[0]
        return [per_core(r["rps"], r["cpu"][name]) for r in res.hits[label]]

    plain, tls = median(rps("node, plain HTTP")), median(rps("node, HTTPS"))
    plain_core, tls_core = median(core("node, plain HTTP")), median(core("node, HTTPS"))
    rows = []
    for _, _, label in HIT_ROWS:
        runs = res.hits[label]
        rows.append([label, spread(rps(label)), f"{median([r['p50'] for r in runs]) / 1000:.2f}",
                     f"{median([r['p99'] for r in runs]) / 1000:.2f}", sum(r["errors"] for r in runs),
                     cpu_pct([r["cpu"][label.split(",")[0]] for r in runs]), f"{median(core(label)):,.0f}",
                     cpu_pct([r["other"] for r in runs]), f"{median(rps(label)) / plain:.2f}×"])
    saturated = min(median([r["cpu"]["node"] for r in res.hits[label]]) for label in ("node, plain HTTP", "node, HTTPS"))
    per_round = [t / p for t, p in zip(rps("node, HTTPS"), rps("node, plain HTTP"))]
    notes = [
        f"Target, node HTTPS hits / node plain-HTTP hits, req/s: {verdict(tls / plain, HITS_TARGET)}; per round: "
        f"{', '.join(f'{x:.2f}' for x in per_round)}; per node core-second: {tls_core / plain_core:.2f}×"
        + ("." if saturated >= 0.9 else
           f" (the node was below 90% CPU in a row, {saturated * 100:.0f}%: wrk or other load was the limit, and "
           "the per core-second ratio is the fairer one)."),
        f"Node HTTPS hits / nginx HTTPS hits: {tls / median(rps('nginx, HTTPS')):.2f}× in req/s, "
        f"{tls_core / median(core('nginx, HTTPS')):.2f}× per core-second.",
        f"wrk -t1 -c50 -d{args.duration}s --latency, keep-alive (50 handshakes at the start, then requests only; "
        f"TLS 1.3, TLS_AES_256_GCM_SHA384, the {KEYS[kind]} certificate); wrk on core {bench.LOAD_CORE}, each "
        f"server on core {bench.EDGE_CORE} (one node worker, the plain and the HTTPS listener of the same process; "
        "one nginx worker). Each listener's object is checked to be a hit before the runs, and the origin's "
        "request counter unchanged after them.",
        "req/s: median of the rounds (lowest – highest); p50, p99, CPU, per core-s: medians. CPU: the server's "
        "CPU time / wall time (100% = one core); per core-s: req/s / CPU. other load: the rest of the machine "
        "meanwhile, in % of one core (above ~15%: disturbed by other work). ratio: req/s against the node's "
        "plain-HTTP median.",
    ]
    headers = ["server, listener", "req/s", "p50 ms", "p99 ms", "errors", "CPU", "per core-s", "other load", "ratio"]
    rounds = len(res.hits["node, plain HTTP"])
    return bench.table(f"2 KiB cache hits over TLS keep-alive ({rounds} rounds, medians)", headers, rows, notes)


def handshake_table(res: Results, args, kinds: list[str]) -> str:
    rows, missed, missed_raw = [], [], []
    for kind in kinds:
        for case in CASES:
            node = res.handshakes.get((kind, case.id, "node"))
            nginx = res.handshakes.get((kind, case.id, "nginx"))
            if not node or not nginx:
                continue
            n_rate, x_rate = median([h.rate for h in node]), median([h.rate for h in nginx])
            n_core = median([per_core(h.rate, h.cpu) for h in node])
            x_core = median([per_core(h.rate, h.cpu) for h in nginx])
            if n_core < HANDSHAKE_TARGET * x_core:
                missed.append(f"{KEYS[kind]}, {case.label} ({n_core / x_core:.2f}×)")
            if n_rate < HANDSHAKE_TARGET * x_rate:
                missed_raw.append(f"{KEYS[kind]}, {case.label} ({n_rate / x_rate:.2f}×)")
            rows.append([KEYS[kind], case.label, spread([h.rate for h in node]), cpu_pct([h.cpu for h in node]),
                         f"{n_core:,.0f}", f"{1e6 / n_core:,.0f}" if n_core else "-",
                         spread([h.rate for h in nginx]), cpu_pct([h.cpu for h in nginx]),
                         f"{x_core:,.0f}", f"{1e6 / x_core:,.0f}" if x_core else "-",
                         f"**{n_core / x_core:.2f}×**", f"{n_rate / x_rate:.2f}×", cpu_pct([h.other for h in node + nginx])])
    rounds = max((len(v) for v in res.handshakes.values()), default=0)
    notes = [
        f"Target, node / nginx handshakes per server core-second: ≥ {HANDSHAKE_TARGET}× — "
        + ("**met** in every row." if not missed else "**NOT met** for " + "; ".join(missed) + ".")
        + " In handshakes per second: " + (f"≥ {HANDSHAKE_TARGET}× in every row." if not missed_raw else
                                            "below for " + "; ".join(missed_raw) + "."),
        "Why per core-second: one s_time handshake costs the client about as much CPU as the server (the same "
        "OpenSSL 3.0 on both sides), so one load core cannot keep either server busy (see their CPU): handshakes "
        "per second measure the client as much as the server. Per core-s = handshakes per second / the server's "
        "CPU (100% = one core), µs = CPU per handshake; from /proc, so other load on the machine does not count.",
        f"Client: `openssl s_time -connect 127.0.0.1:PORT -new|-reuse [-tls1_2] [-www URL] -time {args.duration} "
        f"-verify 3 -CAfile root.pem`, {args.clients} processes at once on core {bench.LOAD_CORE}, each one "
        f"connection at a time (connect, handshake, close); the servers on core {bench.EDGE_CORE}, one node worker "
        "and one nginx worker. Rate: connections all processes completed / wall time (s_time's own "
        "\"connections/user sec\" divides by the client's CPU time). Every connection's mark is counted "
        "(`r` resumed, `*` new): a resumed row with fewer than 99% resumed fails the run.",
        "Full: a new session each time (ECDHE X25519 and the certificate's signature). Resumed TLS 1.2: the "
        "session ticket of the first connection, no key exchange. Resumed TLS 1.3: s_time keeps a TLS 1.3 "
        "ticket only when it reads from the connection (tickets come after the handshake), so this row asks for "
        f"the 2 KiB object on each connection (`-www https://{NAME}{HIT_PATH}`: HTTP/1.0, the server answers "
        "the hit and closes), and the full TLS 1.3 row with the same request is its baseline. The resumed "
        "TLS 1.3 handshake is a PSK with ECDHE (OpenSSL's default), so it still does a key exchange.",
        "s_time sends no server name: the node answers with `tls.default_certificate` (the same file as the "
        "tenant's certificate in its store), nginx with its server's certificate. Both send the leaf and its "
        "intermediate. TLS 1.2 suites: the node's (Mozilla intermediate without DHE) in both, the client's order.",
    ]
    headers = ["certificate", "handshake", "node /s", "node CPU", "node per core-s", "node µs", "nginx /s",
               "nginx CPU", "nginx per core-s", "nginx µs", "node / nginx per core-s", "node / nginx /s",
               "other load"]
    return bench.table(f"TLS handshakes, node against nginx ({rounds} rounds, medians)", headers, rows, notes)


# ------------------------------------------------------------------------ main


def measure(args) -> Iterator[str]:
    """The tables, once every round is done."""
    require_tools()
    kinds = args.keys
    cases = [c for c in CASES if c.id in args.cases]
    res = Results()
    with bench.Stack() as st:
        origin, origin_url = st.origin()
        servers: dict[str, tuple[Server, Server]] = {}
        certs: dict[str, Certificate] = {}
        for kind in kinds:
            certs[kind] = make_certificate(st.dir, kind)
            log(f"starting the node and nginx with the {KEYS[kind]} certificate")
            pair = (start_node(st, origin_url, certs[kind], kind), start_nginx(st, origin_url, certs[kind], kind))
            for server in pair:
                warm(server, certs[kind])
            servers[kind] = pair
        before = bench.origin_stats(origin_url)["total"]
        for round_ in range(1, args.rounds + 1):
            if args.hits:
                node, nginx = servers[kinds[0]]
                for name, listener, label in HIT_ROWS:
                    log(f"round {round_}/{args.rounds}: wrk {label}, {args.duration}s")
                    res.add_hits(label, run_hits(node if name == "node" else nginx, listener, st, args))
            for kind in kinds:
                for case in cases:
                    for server in servers[kind]:
                        log(f"round {round_}/{args.rounds}: s_time {KEYS[kind]}, {case.label}, {server.name}, "
                            f"{args.duration}s")
                        res.add_handshakes(kind, case, server.name, run_s_time(server, case, certs[kind], args))
        origin_requests = bench.origin_stats(origin_url)["total"] - before
        if origin_requests:
            raise bench.BenchError(f"{origin_requests} requests reached the origin while hits were measured")
        if args.hits:
            yield hits_table(res, args, kinds[0])
        if cases:
            yield handshake_table(res, args, kinds)
        if args.profile:
            yield from profile(st, servers[kinds[0]], certs[kinds[0]], args)


# Where a server's CPU goes, by the file its samples fall in (perf report --sort dso).
PERF_GROUPS = (
    ("OpenSSL (libssl, libcrypto)", ("libssl", "libcrypto")),
    ("kernel (TCP, sockets, scheduling)", ("[kernel",)),
    ("Python interpreter", ("libpython", "python3")),
    ("uvloop", ("loop.cpython",)),
    ("aiohttp, multidict, yarl (C parts)", ("_http_", "_websocket", "multidict", "yarl", "propcache", "frozenlist")),
    ("nginx", ("nginx",)),
    ("libc", ("libc.so", "ld-linux")),
)
_PERF_LINE = re.compile(r"^\s*([\d.]+)%\s+(\S.*?)\s*$")


def perf_shares(data: Path) -> dict[str, float]:
    """Share of the samples per PERF_GROUPS group (and "other")."""
    out = subprocess.run(["perf", "report", "-i", str(data), "--sort", "dso", "--stdio", "--percent-limit", "0"],
                         capture_output=True, text=True)
    shares: dict[str, float] = {}
    for line in out.stdout.splitlines():
        m = _PERF_LINE.match(line)
        if not m or line.startswith("#"):
            continue
        group = next((g for g, marks in PERF_GROUPS if any(k in m.group(2) for k in marks)), "other")
        shares[group] = shares.get(group, 0.0) + float(m.group(1)) / 100
    return shares


def profile(st: bench.Stack, servers: tuple[Server, Server], cert: Certificate, args) -> Iterator[str]:
    """While the --profile row runs once more: perf on each server (CPU per
    operation by library and kernel), and py-spy on the node over TLS (its
    Python). For hits, the node's plain listener is a column of its own."""
    node, nginx = servers
    if args.profile == "hits":
        what = "2 KiB hits over keep-alive"
        runs = [(label, node if name == "node" else nginx, listener) for name, listener, label in HIT_ROWS[:3]]
    else:
        case = next(c for c in CASES if c.id == args.profile)
        what = f"handshakes, {case.label}"
        runs = [(srv.name, srv, "tls") for srv in servers]
    pyspy = os.environ.get("PY_SPY") or shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not os.access(pyspy, os.X_OK):
        raise bench.BenchError("py-spy is not installed; `pip install py-spy`")
    perf = shutil.which("perf")
    costs: dict[str, tuple[dict[str, float], float]] = {}
    spied = None
    for i, (label, server, listener) in enumerate(runs):
        attached, data, raw = [], st.dir / f"perf-{i}.data", st.dir / "py-spy.txt"
        spy = server is node and listener == "tls"
        if perf:
            attached.append(subprocess.Popen(bench.pinned(
                [perf, "record", "-q", "-e", "cpu-clock", "-F", "999", "-o", str(data), "-p", str(server.pid), "--",
                 "sleep", str(args.duration)], bench.LOAD_CORE), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        if spy:
            # py-spy cannot unwind C frames without stopping the node.
            attached.append(subprocess.Popen(bench.pinned(
                [pyspy, "record", "--pid", str(node.pid), "--format", "raw", "--rate", str(args.rate), "--duration",
                 str(args.duration), "--output", str(raw), "--native" if args.native else "--nonblocking"],
                bench.LOAD_CORE), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        try:
            time.sleep(0.5)
            log(f"profiling {label} during {what}, {args.duration}s")
            if args.profile == "hits":
                r = run_hits(server, listener, st, args)
                rate, cpu, other = r["rps"], r["cpu"][server.name], r["other"]
            else:
                h = run_s_time(server, case, cert, args)
                rate, cpu, other = h.rate, h.cpu, h.other
            errors = [p.communicate(timeout=args.duration + 30)[1] for p in attached]
        finally:
            for p in attached:
                if p.poll() is None:
                    p.kill()
        if perf and data.exists():
            costs[label] = (perf_shares(data), cpu / rate * 1e6 if rate else 0.0)
        if spy:
            if not raw.exists():
                raise bench.BenchError(f"py-spy wrote no profile: {errors[-1].decode(errors='replace')}")
            spied = (raw.read_text(), {"rps": rate, "other": other, "cpu": {"edge": cpu}})
    if costs:
        groups = [g for g, _ in PERF_GROUPS] + ["other"]
        rows = [[g, *(f"{shares.get(g, 0.0) * per_op:,.1f} ({shares.get(g, 0.0) * 100:.0f}%)"
                      for shares, per_op in costs.values())]
                for g in groups if any(shares.get(g, 0.0) >= 0.005 for shares, _ in costs.values())]
        rows.append(["**total** (server CPU / rate)", *(f"**{per_op:,.1f}**" for _, per_op in costs.values())])
        yield bench.table(
            f"CPU µs per operation by where it is spent: {what}", ["where", *(f"{n}: µs (share)" for n in costs)], rows,
            ["perf record -e cpu-clock -F 999 on each server process during one more run of the row (on-CPU samples "
             "only, so idle time does not count), grouped by the file each sample falls in; µs: that share of the "
             "server's CPU time per operation, measured from /proc during the same run. The profilers cost "
             "the load core time, so the rates of this run are not the benchmark's."])
    text, r = spied
    # Without native frames, the loop's own C work and its waits are samples ending in
    # Runner.run; perf above has them. The rest is the node's Python and the C it calls.
    text = "\n".join(line for line in text.splitlines()
                     if not line.rpartition(" ")[0].rsplit(";", 1)[-1].startswith("Runner.run ("))
    args.blocking = args.native
    yield bench.profile_report(text, r, args, what=f"{what} over TLS (samples in the event loop itself left out)",
                               unit="/s")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=int, default=5, help="seconds per row and server (default 5)")
    p.add_argument("--rounds", type=int, default=3, help="rounds of every row; the tables show medians (default 3)")
    p.add_argument("--clients", type=int, default=8, help="openssl s_time processes at once (default 8)")
    p.add_argument("--keys", type=lambda s: s.split(","), default=list(KEYS),
                   help=f"certificate key types, comma-separated, of {', '.join(KEYS)} (default: both; hits use the first)")
    p.add_argument("--cases", type=lambda s: s.split(","), default=[c.id for c in CASES],
                   help=f"handshake rows, comma-separated, of {', '.join(c.id for c in CASES)} (default: all; none: '')")
    p.add_argument("--no-hits", dest="hits", action="store_false", help="handshakes only")
    p.add_argument("--profile", choices=["hits", *(c.id for c in CASES)],
                   help="afterwards, py-spy on the node during one more run of that row")
    p.add_argument("--rate", type=int, default=1000, help="py-spy samples per second (with --profile)")
    p.add_argument("--native", action="store_true", help="py-spy --native (C frames; with --profile)")
    p.add_argument("--top", type=int, default=25, help="profile rows (with --profile)")
    p.add_argument("--output", help="also append the tables to this file")
    args = p.parse_args(argv)
    bad = [k for k in args.keys if k not in KEYS] + [c for c in args.cases if c and c not in {x.id for x in CASES}]
    if bad or not args.keys:
        p.error(f"unknown key type or row: {', '.join(bad) or '(none)'}")
    args.cases = [c for c in args.cases if c]

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if bench.can_pin():
        os.sched_setaffinity(0, {bench.LOAD_CORE})
    return bench.emit(measure(args), args.output)


if __name__ == "__main__":
    raise SystemExit(main())
