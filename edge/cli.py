"""Command line: ``edge serve`` in its three forms, and the admin commands.

    edge serve                              demo tenant + built-in demo origin
    edge serve --origin URL [--policy F]    quick mode: one tenant, any Host
                                            (both keep their policies in --state-dir, edge.state)
    edge serve --config edge.toml           a node with a policies directory
    edge purge --tenant T --url U ...       purge through the admin API
    edge policy get|set|validate            tenant policies through the admin API (validate: offline)
    edge cert set|list|delete               tenant certificates through the admin API
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
from typing import TYPE_CHECKING

from edge.config import ConfigError, default_config, load_config
from edge.config_tls import ListenAddress
from edge.schema.values import ISO_COUNTRIES, parse_size

if TYPE_CHECKING:
    from edge.state import Seed

log = logging.getLogger("edge")

DEMO_ORIGIN = ("127.0.0.1", 8081)


@dataclass(frozen=True)
class SourceSpec:
    """How a worker finds its policies (picklable, for worker processes)."""

    kind: str  # "directory" (--config) | "state" (quick and demo mode)
    path: str  # the policy directory
    seed: Seed | None = None  # "state": what the mode defines


def make_source(spec: SourceSpec):
    if spec.kind == "state":
        from edge.state import StateDirectory

        return StateDirectory(Path(spec.path), spec.seed)
    from edge.policy.sources import DirectorySource

    return DirectorySource(Path(spec.path))


def _parse_listen(value: str) -> ListenAddress:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, found {value!r}")
    host = host.strip("[]") or "0.0.0.0"
    return ListenAddress(host, int(port))


def _parse_tls_listen(value: str) -> ListenAddress:
    address = _parse_listen(value)
    return ListenAddress(address.host, address.port, tls=True)


def _parse_origin(value: str) -> str:
    """Checked as a policy's origin URL is: what passes here, the tenant's policy takes."""
    from edge.policy.sections.origins import URL, quick_origin

    if quick_origin(value) is None:
        raise argparse.ArgumentTypeError(f"expected {URL}, such as http://127.0.0.1:8000, found {value!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge", description="CDN edge node")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the node")
    serve.add_argument("--config", help="node configuration (TOML)")
    serve.add_argument("--origin", type=_parse_origin, help="quick mode: one tenant in front of this origin")
    serve.add_argument("--policy", help="quick mode: policy file for that tenant")
    serve.add_argument("--state-dir", metavar="DIR",
                       help="quick and demo mode: keep the policies (those written through the admin API too) "
                            "here; default: a fresh directory for this run, removed when it stops")
    serve.add_argument("--listen", type=_parse_listen, action="append", help="HOST:PORT (repeatable; default 127.0.0.1:8080)")
    serve.add_argument("--tls-listen", type=_parse_tls_listen, action="append", metavar="HOST:PORT",
                       help="an HTTPS listener with the tenants' certificates (repeatable)")
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
    # prometheus-client reads this when first imported: the node sets it
    # itself (_supervise), never to a directory of another run.
    for name in ("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir"):
        os.environ.pop(name, None)
    demo = False
    seed = None
    if args.config:
        if args.origin or args.policy:
            return _fail("--config cannot be combined with --origin/--policy")
        if args.state_dir:
            return _fail("--state-dir is for quick and demo mode; with --config, policies.directory holds the policies")
        try:
            config = load_config(args.config)
        except ConfigError as exc:
            return _fail(f"invalid configuration, not starting:\n{exc}")
        if config.policies.directory is None:
            return _fail(f"{args.config}: policies.directory: expected a directory of tenant policies, found nothing")
    else:
        from edge.state import Seed

        config = default_config()
        if args.origin:
            seed = Seed("default", args.policy, args.origin)
        elif args.policy:
            return _fail("--policy needs --origin (quick mode)")
        else:
            demo = True
            from edge.app import default_policies_dir

            demo_file = default_policies_dir() / "demo.json"
            if not demo_file.is_file():
                return _fail(f"demo policy not found at {demo_file}")
            seed = Seed("demo", str(demo_file))

    try:
        config = apply_flags(config, args, demo)
    except (ValueError, ConfigError) as exc:
        return _fail(str(exc))
    problem = (
        _check_cache_dir(config) or _check_geoip(config) or _check_lists(config) or _check_waf() or _check_admin(config)
        or _check_aiohttp()
    )
    if problem:
        return _fail(problem)
    level = args.log_level or config.log.level
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if seed is None:
        return _serve(config, SourceSpec("directory", str(config.policies.directory)), demo)

    from edge.state import StateError, open_state_dir

    try:
        state = open_state_dir(args.state_dir)
    except StateError as exc:
        return _fail(str(exc))
    try:
        return _serve(config, SourceSpec("state", str(state.policies), seed), demo, state)
    finally:
        state.close()


def _serve(config, spec: SourceSpec, demo: bool, state=None) -> int:
    if config.tls.certificate_dir is None:
        from edge.tls.store import default_root

        config = dataclasses.replace(config, tls=dataclasses.replace(config.tls, certificate_dir=default_root(Path(spec.path))))
    # Validate the policies once in the parent: a quick-mode policy file that
    # is broken must stop the start with a precise message.
    source = make_source(spec)
    if spec.seed is not None:
        problem = _seed_state(source)
        if problem:
            return _fail(problem)
    report = source.load(origin_client_certificate=config.origin_tls.enabled)
    for err in report.errors:
        print(f"edge: policy rejected: {err}", file=sys.stderr)
    if spec.seed is not None and spec.seed.tenant not in source.current.tenants:
        return _fail(f"no valid policy for tenant {spec.seed.tenant}, not starting "
                     f"(fix or remove {source.files.path(spec.seed.tenant)})")

    if config.workers > 1:
        problem = _check_listen(config)
        if problem:
            return _fail(problem)
        return _supervise(config, spec, demo, state)
    return run(_run_single(config, spec, demo, source, state))


def _seed_state(source) -> str | None:
    """Write the mode's tenant into the state directory (edge.state); say
    on stderr when a policy written through the admin API stays instead."""
    from edge.policy.errors import PolicyError

    seed = source.seed
    try:
        synced = source.sync(start=True)
    except PolicyError as exc:
        for err in exc.errors:
            print(f"edge: policy rejected: {err}", file=sys.stderr)
        return "no valid policy, not starting"
    except OSError as exc:
        return f"--state-dir {source.path.parent}: cannot write the policy of tenant {seed.tenant}: " \
               f"{(exc.strerror or str(exc)).lower()}"
    if synced.kept:
        if seed.origin is None:
            instead = seed.path
        else:
            instead = f"--policy {seed.path}" if seed.path else "the default quick-mode policy"
        print(f"edge: tenant {seed.tenant}: {source.files.path(seed.tenant)} was changed through the admin API "
              f"since it was seeded and stays in force instead of {instead} (remove that file to start from "
              "the command line again)", file=sys.stderr)
    if synced.origin_was is not None:
        print(f"edge: tenant {seed.tenant}: origin {seed.origin} (--origin) instead of {synced.origin_was}",
              file=sys.stderr)
    return None


def apply_flags(config, args, demo: bool):
    """``config`` with the ``edge serve`` flags in ``args`` applied (they win
    over the file); ValueError names a bad flag."""
    changes = {}
    if args.listen or args.tls_listen:
        # Each flag replaces the file's listeners of its kind.
        plain = tuple(args.listen) if args.listen else tuple(a for a in config.listen if not a.tls)
        tls = tuple(args.tls_listen) if args.tls_listen else tuple(a for a in config.listen if a.tls)
        seen = set()
        for address in plain + tls:
            if (address.host, address.port) in seen:
                raise ValueError(f"--listen / --tls-listen: {address.host}:{address.port} given twice")
            seen.add((address.host, address.port))
        changes["listen"] = plain + tls
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
        from edge.admin.auth import MAX_TOKEN_LENGTH, MIN_TOKEN_LENGTH, TOKEN_CHARS, token_from_env

        if len(env_token) > MAX_TOKEN_LENGTH or not TOKEN_CHARS.issuperset(env_token):
            raise ValueError(f"EDGE_ADMIN_TOKEN: expected at most {MAX_TOKEN_LENGTH} letters, digits and -._~+/= "
                             "(what Authorization: Bearer carries), found other characters")
        if len(env_token) < MIN_TOKEN_LENGTH:
            raise ValueError(f"EDGE_ADMIN_TOKEN: expected at least {MIN_TOKEN_LENGTH} characters (short tokens "
                             f"can be guessed; `edge token new` makes one), found {len(env_token)}")
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


def _check_aiohttp() -> str | None:
    """The slow-client deadlines, the bounded wait for an origin connection
    and the bound on an origin's interim responses override aiohttp
    internals: without them the node must not start, rather than run
    without those protections."""
    import aiohttp

    from edge.http import aiohttp_adapter

    missing = aiohttp_adapter.missing_internals()
    if missing:
        major, minor = aiohttp_adapter.SUPPORTED
        return (f"aiohttp {aiohttp.__version__} lacks {', '.join(missing)}, which the node relies on; "
                f"install aiohttp {major}.{minor}")
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


def _loop_factory():
    """uvloop's event loop when uvloop is installed, else None (asyncio's own)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(main):
    """Run the coroutine ``main`` on a new event loop, uvloop's when installed.
    The loop is made by a factory: the process-wide event loop policy, which
    asyncio deprecates, is left alone."""
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(main)


def _url(scheme: str, host: str, port: int) -> str:
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def _banner(config, listeners, demo: bool, workers: int, admin_address=None, state=None) -> None:
    """``listeners``: (scheme, host, port) of each address listened on."""
    if not listeners:
        listeners = [("https" if a.tls else "http", a.host, a.port) for a in config.listen]
    urls = ", ".join(_url(*listener) for listener in listeners)
    print(f"edge: node {config.name!r} listening on {urls} ({workers} worker{'s' if workers > 1 else ''})", flush=True)
    if any(scheme == "https" for scheme, _, _ in listeners):
        default = config.tls.default_certificate
        print(f"edge: HTTPS with the tenants' certificates in {config.tls.certificate_dir}; default certificate "
              f"{default if default else 'none (a handshake for a name without a certificate fails)'}", flush=True)
    base = _url(*next((listener for listener in listeners if listener[0] == "http"), listeners[0]))
    geo = config.geoip.database
    print(f"edge: GeoIP database {geo if geo else 'none (every client country unknown)'}; node country {config.country or 'not set'}", flush=True)
    if config.admin.enabled:
        admin_host, admin_port = admin_address or (config.admin.listen.host, config.admin.listen.port)
        print(f"edge: admin API on {_url('http', admin_host, admin_port)}", flush=True)
    if state is not None:
        kept = "removed when the node stops; --state-dir DIR keeps them" if state.made else "kept across restarts"
        print(f"edge: state directory {state.root} (policies, also those written through the admin API; {kept})",
              flush=True)
    if demo:
        print(
            f"edge: demo tenant in front of the built-in demo origin at http://{DEMO_ORIGIN[0]}:{DEMO_ORIGIN[1]}\n"
            f"  try: curl -i {base}/            (HTML, cached 10 s; run it twice and watch Cache-Status)\n"
            f"       curl -i {base}/static/site.css\n"
            f"       curl -i -H 'Accept-Language: de' {base}/lang",
            flush=True,
        )


async def _run_single(config, spec: SourceSpec, demo: bool, source, state=None) -> int:
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
            ready=lambda n: _banner(config, n.listeners, demo, 1, n.admin.addresses[0] if n.admin else None, state),
            extra_cleanup=cleanups,
        )
    except OSError as exc:
        for cleanup in cleanups:
            await cleanup()
        return _fail(f"cannot listen: {exc.strerror or exc}")
    except ConfigError as exc:
        for cleanup in cleanups:
            await cleanup()
        return _fail(str(exc))
    return 0


def _worker_main(config, spec: SourceSpec) -> None:
    from edge.app import Node, serve_forever

    logging.basicConfig(level=config.log.level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    source = make_source(spec)
    source.load(origin_client_certificate=config.origin_tls.enabled)
    run(serve_forever(Node(config, source, reuse_port=True)))


def _supervise(config, spec: SourceSpec, demo: bool, state=None) -> int:
    """Parent of N workers: starts them, restarts one that dies, forwards
    SIGHUP (reload) and SIGTERM/SIGINT (graceful stop)."""
    ctx = multiprocessing.get_context("spawn")
    from edge.app import node_secret

    node_secret()  # made here, inherited by every worker
    # The workers' control sockets (edge.admin.control): this run's only, mode 0700.
    # Purges, and invalidations after unsafe requests, reach every worker through them.
    port = config.admin.listen.port if config.admin.enabled else config.listen[0].port
    run_dir = Path(tempfile.mkdtemp(prefix=f"edge-{port}-"))
    config = dataclasses.replace(config, admin=dataclasses.replace(config.admin, run_dir=run_dir))
    metrics_dir = None
    if config.admin.enabled:
        # Every worker's metrics, for the one that answers a scrape (edge.observe.metrics).
        metrics_dir = run_dir / "metrics"
        metrics_dir.mkdir(mode=0o700)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    try:
        return _supervise_workers(ctx, config, spec, demo, state, metrics_dir)
    finally:
        import shutil

        shutil.rmtree(run_dir, ignore_errors=True)


def _supervise_workers(ctx, config, spec: SourceSpec, demo: bool, state, metrics_dir: Path | None) -> int:
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
    _banner(config, [], demo, config.workers, state=state)
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
                if metrics_dir is not None:
                    # Its gauges go; its counter files stay, so the node's sums never go back.
                    from prometheus_client.multiprocess import mark_process_dead

                    mark_process_dead(proc.pid, str(metrics_dir))
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

    async def demo() -> None:
        await start_demo_origin(*DEMO_ORIGIN)
        await asyncio.Event().wait()

    run(demo())


if __name__ == "__main__":
    raise SystemExit(main())
