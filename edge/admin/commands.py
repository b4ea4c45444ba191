"""``edge purge``, ``edge policy get|set|validate``, ``edge cert set|list|delete``
and ``edge token hash|new``.

They talk to the admin API (``--admin``, default http://127.0.0.1:9090)
with the token from ``EDGE_ADMIN_TOKEN``; ``policy validate`` and
``token`` work offline. Exit status: 0 done, 1 refused or failed, 2 usage.
Messages, never tracebacks.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
from pathlib import Path
from urllib.parse import quote

from edge.admin.client import (
    DEFAULT_ADMIN,
    TOKEN_ENV,
    AdminClient,
    Answer,
    ClientError,
    tenant_path,
)


def add_commands(sub) -> None:
    purge = sub.add_parser("purge", help="purge cached entries of a tenant (admin API)")
    purge.add_argument("--tenant", required=True, help="tenant id")
    what = purge.add_mutually_exclusive_group(required=True)
    what.add_argument("--url", action="append", help="an absolute URL or a path (repeatable)")
    what.add_argument("--prefix", action="append", help="a URL or path prefix (repeatable)")
    what.add_argument("--tag", action="append", help="a cache tag (repeatable)")
    what.add_argument("--all", action="store_true", help="everything the tenant has cached")
    purge.add_argument("--soft", action="store_true", help="mark stale instead of removing")
    _admin_flag(purge)

    policy = sub.add_parser("policy", help="tenant policies (admin API; validate works offline)")
    psub = policy.add_subparsers(dest="policy_command", required=True)
    get = psub.add_parser("get", help="print a tenant's effective policy as JSON")
    get.add_argument("--tenant", required=True)
    _admin_flag(get)
    put = psub.add_parser("set", help="create or replace a tenant's policy from a file")
    put.add_argument("--tenant", required=True)
    put.add_argument("file", help="policy file (JSON)")
    put.add_argument("--if-match", metavar="VERSION", help="only if the current version is this one (else 412)")
    _admin_flag(put)
    validate = psub.add_parser("validate", help="check a policy file offline; every error with its field")
    validate.add_argument("file")
    validate.add_argument("--tenant", help="tenant id (default: the file name without .json)")
    validate.add_argument("--quick", action="store_true",
                          help="a quick-mode file (edge serve --origin URL --policy FILE): hosts and origins optional")

    cert = sub.add_parser("cert", help="tenant certificates (admin API)")
    csub = cert.add_subparsers(dest="cert_command", required=True)
    cset = csub.add_parser("set", help="store or replace a certificate of a tenant")
    cset.add_argument("tenant", help="tenant id")
    cset.add_argument("name", help="the certificate's name within the tenant, e.g. www")
    cset.add_argument("--cert", required=True, metavar="FILE", help="PEM chain: the leaf first, then each issuer")
    cset.add_argument("--key", required=True, metavar="FILE", help="PEM private key of the leaf")
    cset.add_argument("--passphrase-file", metavar="FILE",
                      help="the key's passphrase, if it is encrypted (its first line)")
    _admin_flag(cset)
    clist = csub.add_parser("list", help="a tenant's certificates (never a key)")
    clist.add_argument("tenant", help="tenant id")
    clist.add_argument("--json", action="store_true", help="print the API's JSON")
    _admin_flag(clist)
    cdelete = csub.add_parser("delete", help="remove a certificate of a tenant")
    cdelete.add_argument("tenant", help="tenant id")
    cdelete.add_argument("name", help="the certificate's name")
    _admin_flag(cdelete)

    token = sub.add_parser("token", help="admin tokens")
    tsub = token.add_subparsers(dest="token_command", required=True)
    tsub.add_parser("hash", help='read a token on stdin, print "sha256:<hex>" for [admin] tokens')
    tsub.add_parser("new", help="print a new random token and its hash")


def _admin_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--admin", default=None, metavar="URL",
                        help=f"admin API (default: {DEFAULT_ADMIN}); token from {TOKEN_ENV}")


def run_command(args) -> int:
    try:
        if args.command == "purge":
            return _purge(args)
        if args.command == "policy":
            return {"get": _policy_get, "set": _policy_set, "validate": _policy_validate}[args.policy_command](args)
        if args.command == "cert":
            return {"set": _cert_set, "list": _cert_list, "delete": _cert_delete}[args.cert_command](args)
        if args.command == "token":
            return {"hash": _token_hash, "new": _token_new}[args.token_command](args)
    except ClientError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return 130
    return 2


def _fail(message: str, status: int = 1) -> int:
    print(f"edge: {message}", file=sys.stderr)
    return status


def _client(args) -> AdminClient:
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise ClientError(f"set {TOKEN_ENV} to an admin token (operator, or one for this tenant)")
    return AdminClient(args.admin or DEFAULT_ADMIN, token)


def _purge(args) -> int:
    client = _client(args)
    body: dict = {}
    if args.url:
        body["urls"] = args.url
    elif args.prefix:
        body["prefixes"] = args.prefix
    elif args.tag:
        body["tags"] = args.tag
    else:
        body["all"] = True
    if args.soft:
        body["soft"] = True
    answer = client.call("POST", tenant_path(args.tenant, "purge"), body)
    if not answer.ok:
        return _fail(f"purge refused: {answer.problem()}")
    data = answer.data or {}
    workers = data.get("workers")
    on = f" on {workers} worker{'s' if workers != 1 else ''}" if isinstance(workers, int) else ""
    print(f"purged {data.get('affected', 0)} entr{'y' if data.get('affected') == 1 else 'ies'} of tenant "
          f"{args.tenant}{on} (purge id {data.get('purge_id', '-')})")
    return 0


def _policy_get(args) -> int:
    client = _client(args)
    answer = client.call("GET", tenant_path(args.tenant, "policy"))
    if not answer.ok:
        return _fail(answer.problem())
    print(json.dumps(answer.data, indent=2, ensure_ascii=False))
    etag = answer.headers.get("ETag", "").strip('"')
    if etag:
        print(f"edge: version {etag} (use --if-match {etag} with policy set)", file=sys.stderr)
    return 0


def _policy_set(args) -> int:
    path = Path(args.file)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return _fail(f"cannot read {path}: {(exc.strerror or str(exc)).lower()}")
    try:
        json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as exc:
        return _fail(f"{path}: not valid JSON: {exc}")
    client = _client(args)
    headers = {}
    if args.if_match:
        tag = args.if_match.strip().strip('"')
        headers["If-Match"] = f'"{tag}"'
    answer = client.call("PUT", tenant_path(args.tenant, "policy"), raw=raw, headers=headers)
    if not answer.ok:
        return _fail(f"policy not changed: {answer.problem()}")
    data = answer.data or {}
    what = "created" if answer.status == 201 else "replaced"
    print(f"tenant {args.tenant}: policy {what}, version {data.get('version')}, served by every worker")
    return 0


# A PEM file larger than this is no certificate chain or key (the API takes 64 KiB a field).
MAX_PEM_FILE = 1 << 20


def _read_text(path: Path, what: str) -> str:
    try:
        if path.stat().st_size > MAX_PEM_FILE:
            raise ClientError(f"{what} {path}: larger than {MAX_PEM_FILE // 1024} KiB, not a PEM file")
        return path.read_text(encoding="ascii")
    except UnicodeDecodeError:
        raise ClientError(f"{what} {path}: not a PEM file (PEM is ASCII text)") from None
    except OSError as exc:
        raise ClientError(f"cannot read {what} {path}: {(exc.strerror or str(exc)).lower()}") from None


def _ask(args, method: str, path: str, body: object = None, *, refused: str = "") -> Answer:
    """The API's answer; a refusal becomes the command's message (exit 1)."""
    answer = _client(args).call(method, path, body)
    if not answer.ok:
        raise ClientError(f"{refused}{answer.problem()}")
    return answer


def _cert_path(args) -> str:
    return tenant_path(args.tenant, "certificates", quote(args.name, safe=""))


def _cert_set(args) -> int:
    body = {"certificate": _read_text(Path(args.cert), "--cert"), "private_key": _read_text(Path(args.key), "--key")}
    if args.passphrase_file:
        lines = _read_text(Path(args.passphrase_file), "--passphrase-file").splitlines()
        if not lines or not lines[0]:
            raise ClientError(f"--passphrase-file {args.passphrase_file}: its first line is empty")
        body["passphrase"] = lines[0]
    data = _ask(args, "PUT", _cert_path(args), body, refused="certificate not stored: ").data or {}
    print(f"tenant {args.tenant}: certificate {args.name} stored for {', '.join(data.get('hosts', []))} "
          f"({data.get('key_type')}, valid until {data.get('not_after')}), served by every worker")
    return 0


def _cert_list(args) -> int:
    certificates = _ask(args, "GET", tenant_path(args.tenant, "certificates")).data or []
    if args.json:
        print(json.dumps(certificates, indent=2))
        return 0
    if not certificates:
        print(f"tenant {args.tenant} has no certificates", file=sys.stderr)
        return 0
    rows = [("NAME", "KEY", "NOT AFTER", "SHA-256", "HOSTS")]
    rows += [(c["name"], c["key_type"], c["not_after"], c["fingerprint_sha256"][:16], " ".join(c["hosts"]))
             for c in certificates]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True)) + "  " + row[4])
    return 0


def _cert_delete(args) -> int:
    _ask(args, "DELETE", _cert_path(args), refused="certificate not removed: ")
    print(f"tenant {args.tenant}: certificate {args.name} removed, no worker serves it any more")
    return 0


def _policy_validate(args) -> int:
    from edge.policy import PolicyError, load_policy_file
    from edge.policy.load import NOT_RESERVED, RESERVED_TENANTS
    from edge.policy.parse import TENANT_ID_RE

    path = Path(args.file)
    tenant = args.tenant
    if tenant is None:
        tenant = path.stem if path.name.endswith(".json") else path.name
        if not TENANT_ID_RE.fullmatch(tenant) or tenant in RESERVED_TENANTS:
            why = "the loader skips it" if tenant in RESERVED_TENANTS else \
                f"<tenant>.json with a tenant id matching ^{TENANT_ID_RE.pattern}$"
            print(f"edge: note: {path.name} is not a valid file name for a policy directory ({why}); "
                  "checking its content", file=sys.stderr)
            tenant = "tenant"
    elif not TENANT_ID_RE.fullmatch(tenant):
        return _fail(f"--tenant: expected a tenant id matching ^{TENANT_ID_RE.pattern}$, found {tenant!r}", 2)
    elif tenant in RESERVED_TENANTS:
        return _fail(f"--tenant: expected {NOT_RESERVED}, found {tenant!r}", 2)
    try:
        policy = load_policy_file(path, tenant=tenant, quick_origin="http://127.0.0.1" if args.quick else None)
    except PolicyError as exc:
        for err in exc.errors:
            print(str(err), file=sys.stderr)
        n = len(exc.errors)
        print(f"edge: {path}: {n} error{'s' if n != 1 else ''}", file=sys.stderr)
        return 1
    print(f"{path}: valid (version {policy.version})")
    return 0


def _token_hash(args) -> int:
    from edge.admin.auth import MAX_TOKEN_LENGTH, TOKEN_CHARS, token_hash

    text = sys.stdin.read().strip()
    if not text:
        return _fail("expected a token on standard input, found nothing", 2)
    if len(text) > MAX_TOKEN_LENGTH or not TOKEN_CHARS.issuperset(text):
        return _fail(f"a token is at most {MAX_TOKEN_LENGTH} characters of letters, digits and -._~+/= "
                     "(what Authorization: Bearer carries)", 2)
    print(token_hash(text))
    return 0


def _token_new(args) -> int:
    from edge.admin.auth import token_hash

    token = secrets.token_urlsafe(32)
    print(f"token: {token}")
    print(f"hash:  {token_hash(token)}")
    print('edge: put the hash in [admin] tokens, e.g. { hash = "...", tenant = "*" }; keep the token secret',
          file=sys.stderr)
    return 0
