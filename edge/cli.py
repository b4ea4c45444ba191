"""Command line: ``edge serve`` in its three forms, and the admin commands.

    edge serve                              demo tenant + built-in demo origin
    edge serve --origin URL [--policy F]    quick mode: one tenant, any Host
    edge serve --config edge.toml           a node with a policies directory
    edge purge --tenant T --url U ...       purge through the admin API
    edge policy get|set|validate            tenant policies through the admin API (validate: offline)
    edge token hash|new                     admin tokens for the configuration
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import ipaddress
import logging
import multiprocessing
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from edge.config import ISO_COUNTRIES, ConfigError, ListenAddress, default_config, load_config, parse_size

log = logging.getLogger("edge")

DEMO_ORIGIN = ("127.0.0.1", 8081)


@dataclass(frozen=True)
class SourceSpec:
    """How a worker finds its policies (picklable, for worker processes)."""

    kind: str  # "directory" | "file" | "quick"
    path: str | None = None
    origin: str | None = None
    tenant: str = "default"


def make_source(spec: SourceSpec):
    from edge.policy.sources import DirectorySource, FileSource

    if spec.kind == "directory":
        source = DirectorySource(Path(spec.path))
    else:
        source = FileSource(Path(spec.path) if spec.path else None, tenant=spec.tenant, quick_origin=spec.origin)
    return source


def _parse_listen(value: str) -> ListenAddress:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, found {value!r}")
    host = host.strip("[]") or "0.0.0.0"
    return ListenAddress(host, int(port))


def _parse_origin(value: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"expected an absolute http(s) URL such as http://127.0.0.1:8000, found {value!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge", description="CDN edge node")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the node")
    serve.add_argument("--config", help="node configuration (TOML)")
    serve.add_argument("--origin", type=_parse_origin, help="quick mode: one tenant in front of this origin")
    serve.add_argument("--policy", help="quick mode: policy file for that tenant")
    serve.add_argument("--listen", type=_parse_listen, action="append", help="HOST:PORT (repeatable; default 127.0.0.1:8080)")
    serve.add_argument("--workers", type=int, help="worker processes sharing the port (SO_REUSEPORT)")
    serve.add_argument("--cache-dir", help="disk tier directory (quick mode; default: none, memory only)")
    serve.add_argument("--cache-size", help="disk tier size, e.g. 10GiB")
    serve.add_argument("--memory", help="memory tier size per worker, e.g. 256MiB")
    serve.add_argument("--name", help="node name used in Via and Cache-Status")
    serve.add_argument("--geoip", help="GeoIP country database (MaxMind DB); default in quick mode: the bundled one")
    serve.add_argument("--node-country", help="ISO 3166-1 alpha-2 country this node stands in, e.g. DE")
    serve.add_argument("--trusted-proxy", action="append", help="CIDR whose X-Forwarded-For is believed (repeatable)")
    serve.add_argument("--no-access-log", action="store_true", help="do not write the access log")
    serve.add_argument("--log-level", default=None, choices=["debug", "info", "warning", "error"])
    serve.add_argument("--admin", type=_parse_listen, metavar="HOST:PORT",
                       help="run the admin API on this address (token: EDGE_ADMIN_TOKEN or [admin] tokens)")

    from edge.admin.commands import add_commands

    add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    from edge.admin.commands import run_command

    return run_command(args)


def _fail(message: str) -> int:
    print(f"edge: {message}", file=sys.stderr)
    return 2


def serve(args) -> int:
    demo = False
    if args.config:
        if args.origin or args.policy:
            return _fail("--config cannot be combined with --origin/--policy")
        try:
            config = load_config(args.config)
        except ConfigError as exc:
            return _fail(f"invalid configuration, not starting:\n{exc}")
        if config.policies.directory is None:
            return _fail(f"{args.config}: policies.directory: expected a directory of tenant policies, found nothing")
        spec = SourceSpec("directory", str(config.policies.directory))
    else:
        config = default_config()
        if args.origin:
            spec = SourceSpec("quick", args.policy, args.origin)
        elif args.policy:
            return _fail("--policy needs --origin (quick mode)")
        else:
            demo = True
            from edge.app import default_policies_dir

            demo_file = default_policies_dir() / "demo.json"
            if not demo_file.is_file():
                return _fail(f"demo policy not found at {demo_file}")
            spec = SourceSpec("file", str(demo_file), tenant="demo")

    try:
        config = _apply_flags(config, args, demo)
    except (ValueError, ConfigError) as exc:
        return _fail(str(exc))
    problem = (
        _check_cache_dir(config) or _check_geoip(config) or _check_lists(config) or _check_waf() or _check_admin(config)
    )
    if problem:
        return _fail(problem)
    level = args.log_level or config.log.level
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)

    # Validate the policies once in the parent: a quick-mode policy file that
    # is broken must stop the start with a precise message.
    source = make_source(spec)
    report = source.load()
    for err in report.errors:
        print(f"edge: policy rejected: {err}", file=sys.stderr)
    if spec.kind != "directory" and not source.current.tenants:
        return _fail("no valid policy, not starting")

    if config.workers > 1:
        problem = _check_listen(config)
        if problem:
            return _fail(problem)
        return _supervise(config, spec, demo)
    _use_uvloop()
    return asyncio.run(_run_single(config, spec, demo, source))


def _apply_flags(config, args, demo: bool):
    changes = {}
    if args.listen:
        changes["listen"] = tuple(args.listen)
    if args.workers is not None:
        if not 1 <= args.workers <= 64:
            raise ValueError(f"--workers: expected 1..64, found {args.workers}")
        changes["workers"] = args.workers
    if args.name:
        changes["name"] = args.name
    if args.no_access_log:
        changes["log"] = dataclasses.replace(config.log, access=False)
    if args.node_country:
        country = args.node_country.strip().upper()
        if country not in ISO_COUNTRIES:
            raise ValueError(f"--node-country: expected an ISO 3166-1 alpha-2 code such as DE, found {args.node_country!r}")
        changes["country"] = country
    if args.trusted_proxy:
        nets = []
        for value in args.trusted_proxy:
            try:
                nets.append(ipaddress.ip_network(value.strip(), strict=True))
            except ValueError:
                raise ValueError(f"--trusted-proxy: expected a CIDR such as 10.0.0.0/8 (no host bits), found {value!r}") from None
        changes["trusted_proxies"] = tuple(config.trusted_proxies) + tuple(nets)
    admin = config.admin
    if args.admin:
        admin = dataclasses.replace(admin, enabled=True, listen=args.admin)
    env_token = os.environ.get("EDGE_ADMIN_TOKEN", "").strip()
    if admin.enabled and env_token:
        from edge.admin.auth import MAX_TOKEN_LENGTH, TOKEN_CHARS, token_from_env

        if len(env_token) > MAX_TOKEN_LENGTH or not TOKEN_CHARS.issuperset(env_token):
            raise ValueError(f"EDGE_ADMIN_TOKEN: expected at most {MAX_TOKEN_LENGTH} letters, digits and -._~+/= "
                             "(what Authorization: Bearer carries), found other characters")
        # Only its hash goes into the configuration the workers get.
        admin = dataclasses.replace(admin, tokens=admin.tokens + (token_from_env(env_token),))
    changes["admin"] = admin
    if args.geoip:
        path = Path(args.geoip).resolve()
        changes["geoip"] = dataclasses.replace(config.geoip, database=path)
    elif not args.config and config.geoip.database is None:
        from edge.geo.db import find_default_database

        bundled = find_default_database()
        if bundled is not None:
            changes["geoip"] = dataclasses.replace(config.geoip, database=bundled)
    cache = config.cache
    if args.memory:
        cache = dataclasses.replace(cache, memory_size=_flag_size("--memory", args.memory))
    if args.cache_size:
        cache = dataclasses.replace(cache, disk_size=_flag_size("--cache-size", args.cache_size))
    if args.cache_dir:
        cache = dataclasses.replace(cache, disk_path=Path(args.cache_dir).resolve())
    elif demo and cache.disk_path is None:
        cache = dataclasses.replace(cache, disk_path=Path(tempfile.gettempdir()) / "edge-demo-cache")
    if not args.config:
        # Quick and demo mode serve one tenant: no one to keep a share for.
        cache = dataclasses.replace(cache, tenant_disk_quota=cache.disk_size)
    changes["cache"] = cache
    return dataclasses.replace(config, **changes)


def _flag_size(flag: str, value: str) -> int:
    try:
        return parse_size(value)
    except ValueError as exc:
        raise ValueError(f"{flag}: {exc}") from None


def _check_cache_dir(config) -> str | None:
    path = config.cache.disk_path
    if path is None:
        return None
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot use the cache directory {path}: {(exc.strerror or str(exc)).lower()}"
    return None


def _check_admin(config) -> str | None:
    admin = config.admin
    if not admin.enabled:
        return None
    from edge.config import admin_listen_problem

    problem = admin_listen_problem(admin.listen, config.listen, config.workers)
    if problem:
        return f"--admin / admin.listen {admin.listen.host}:{admin.listen.port}: expected {problem}"
    return None


def _check_geoip(config) -> str | None:
    """Open the GeoIP database once here: a missing or broken file stops the
    start with its name, before any worker runs."""
    if config.geoip.database is None:
        return None
    from edge.geo.db import GeoDB, GeoDBError

    try:
        GeoDB(config.geoip.database)
    except GeoDBError as exc:
        return str(exc)
    return None


def _check_lists(config) -> str | None:
    """Read the node-wide address list files once here: a bad line stops
    the start with the file and line."""
    from edge.app import node_lists
    from edge.config import ConfigError

    try:
        node_lists(config)
    except ConfigError as exc:
        return str(exc)
    return None


def _check_waf() -> str | None:
    """Load the WAF rules once here: a broken rule stops the start with the
    file, rule and field it is in."""
    from edge.waf import WafRuleError, default_rules_dir, load_ruleset

    try:
        load_ruleset(default_rules_dir())
    except WafRuleError as exc:
        return f"WAF rules: {exc}"
    return None


def _check_listen(config) -> str | None:
    """Workers bind with SO_REUSEPORT in their own processes; find a busy
    address here, once, instead of in workers that die and are restarted."""
    import socket

    addresses = list(config.listen)
    if config.admin.enabled:
        addresses.append(config.admin.listen)
    for listen in addresses:
        family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            try:
                probe.bind((listen.host, listen.port))
            except OSError as exc:
                return f"cannot listen on {listen.host}:{listen.port}: {(exc.strerror or str(exc)).lower()}"
    return None


def _use_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _banner(config, addresses, demo: bool, workers: int, admin_address=None) -> None:
    host, port = addresses[0] if addresses else (config.listen[0].host, config.listen[0].port)
    shown = f"[{host}]" if ":" in host else host
    print(f"edge: node {config.name!r} listening on http://{shown}:{port} ({workers} worker{'s' if workers > 1 else ''})", flush=True)
    geo = config.geoip.database
    print(f"edge: GeoIP database {geo if geo else 'none (every client country unknown)'}; node country {config.country or 'not set'}", flush=True)
    if config.admin.enabled:
        admin_host, admin_port = admin_address or (config.admin.listen.host, config.admin.listen.port)
        admin_shown = f"[{admin_host}]" if ":" in admin_host else admin_host
        print(f"edge: admin API on http://{admin_shown}:{admin_port}", flush=True)
    if demo:
        print(
            f"edge: demo tenant in front of the built-in demo origin at http://{DEMO_ORIGIN[0]}:{DEMO_ORIGIN[1]}\n"
            f"  try: curl -i http://{shown}:{port}/            (HTML, cached 10 s; run it twice and watch Cache-Status)\n"
            f"       curl -i http://{shown}:{port}/static/site.css\n"
            f"       curl -i -H 'Accept-Language: de' http://{shown}:{port}/lang",
            flush=True,
        )


async def _run_single(config, spec: SourceSpec, demo: bool, source) -> int:
    from edge.app import Node, serve_forever
    from edge.demo import start_demo_origin

    cleanups = []
    if demo:
        try:
            runner = await start_demo_origin(*DEMO_ORIGIN)
        except OSError as exc:
            return _fail(f"cannot start the demo origin on {DEMO_ORIGIN[0]}:{DEMO_ORIGIN[1]}: {exc.strerror}")
        cleanups.append(runner.cleanup)
    node = Node(config, source)
    try:
        await serve_forever(
            node,
            ready=lambda n: _banner(config, n.addresses, demo, 1, n.admin.addresses[0] if n.admin else None),
            extra_cleanup=cleanups,
        )
    except OSError as exc:
        for cleanup in cleanups:
            await cleanup()
        return _fail(f"cannot listen: {exc.strerror or exc}")
    return 0


def _worker_main(config, spec: SourceSpec) -> None:
    from edge.app import Node, serve_forever

    logging.basicConfig(level=config.log.level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _use_uvloop()
    source = make_source(spec)
    source.load()
    asyncio.run(serve_forever(Node(config, source, reuse_port=True)))


def _supervise(config, spec: SourceSpec, demo: bool) -> int:
    """Parent of N workers: starts them, restarts one that dies, forwards
    SIGHUP (reload) and SIGTERM/SIGINT (graceful stop)."""
    ctx = multiprocessing.get_context("spawn")
    from edge.app import node_secret

    node_secret()  # made here, inherited by every worker
    run_dir = None
    if config.admin.enabled:
        # The workers' control sockets (edge.admin.control): this run's only, mode 0700.
        run_dir = Path(tempfile.mkdtemp(prefix=f"edge-{config.admin.listen.port}-"))
        config = dataclasses.replace(config, admin=dataclasses.replace(config.admin, run_dir=run_dir))
    try:
        return _supervise_workers(ctx, config, spec, demo)
    finally:
        if run_dir is not None:
            import shutil

            shutil.rmtree(run_dir, ignore_errors=True)


def _supervise_workers(ctx, config, spec: SourceSpec, demo: bool) -> int:
    demo_proc = None
    if demo:
        demo_proc = ctx.Process(target=_demo_main, name="edge-demo-origin", daemon=True)
        demo_proc.start()
    workers: list = [None] * config.workers
    stopping = False

    def start(i: int) -> None:
        proc = ctx.Process(target=_worker_main, args=(config, spec), name=f"edge-worker-{i}")
        proc.start()
        workers[i] = proc

    def on_stop(signum, frame) -> None:
        nonlocal stopping
        stopping = True

    def on_hup(signum, frame) -> None:
        for proc in workers:
            if proc is not None and proc.pid:
                os.kill(proc.pid, signal.SIGHUP)

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hup)
    for i in range(config.workers):
        start(i)
    _banner(config, [(config.listen[0].host, config.listen[0].port)], demo, config.workers)
    restarts: list[float] = []
    failed = False
    while not stopping:
        time.sleep(0.2)
        for i, proc in enumerate(workers):
            if not stopping and proc is not None and not proc.is_alive():
                now = time.monotonic()
                restarts = [t for t in restarts if now - t < 60] + [now]
                if len(restarts) > 5 * config.workers:
                    log.error("workers keep dying; giving up")
                    stopping = True
                    failed = True
                    break
                log.warning("worker %d exited with %s; restarting", i, proc.exitcode)
                start(i)
    for proc in workers:
        if proc is not None and proc.is_alive():
            proc.terminate()
    deadline = time.monotonic() + config.timeouts.shutdown + 5
    for proc in workers:
        if proc is not None:
            proc.join(max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
    if demo_proc is not None:
        demo_proc.terminate()
    return 1 if failed else 0


def _demo_main() -> None:
    from edge.demo import start_demo_origin

    async def run() -> None:
        await start_demo_origin(*DEMO_ORIGIN)
        await asyncio.Event().wait()

    asyncio.run(run())


if __name__ == "__main__":
    raise SystemExit(main())
