"""A small synchronous client of the admin API, for the ``edge`` command
(``edge purge``, ``edge policy get|set``, ``edge cert``). Standard library only."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

DEFAULT_ADMIN = "http://127.0.0.1:9090"
TOKEN_ENV = "EDGE_ADMIN_TOKEN"
TIMEOUT = 60.0  # a purge waits for every worker; policy writes fsync


class ClientError(Exception):
    """Something the user is told in one message (and the command exits 1)."""


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    data: Any

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def problem(self) -> str:
        """The API's error and its details, as lines for a terminal."""
        if isinstance(self.data, dict) and "error" in self.data:
            lines = [f"{self.data['error']} (HTTP {self.status})"]
            for d in self.data.get("details") or ():
                if isinstance(d, dict):
                    where = d.get("field") or "-"
                    lines.append(f"  {where}: {d.get('message', '')}")
            return "\n".join(lines)
        return f"HTTP {self.status}: {str(self.data)[:500]}"


def check_base(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ClientError(f"--admin: expected a URL such as {DEFAULT_ADMIN}, found {url!r}")
    return url.rstrip("/")


def tenant_path(tenant: str, *rest: str) -> str:
    return "/v1/tenants/" + "/".join([quote(tenant, safe=""), *rest])


class AdminClient:
    def __init__(self, base: str, token: str | None) -> None:
        self.base = check_base(base)
        self.token = token

    def call(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
             raw: bytes | None = None) -> Answer:
        h = {"Accept": "application/json"}
        if self.token:
            h["Authorization"] = f"Bearer {self.token}"
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
        if data is not None:
            h["Content-Type"] = "application/json"
        h.update(headers or {})
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=h)
        try:
            with _OPENER.open(req, timeout=TIMEOUT) as resp:
                return _answer(resp.status, resp.headers, resp.read())
        except urllib.error.HTTPError as exc:
            return _answer(exc.code, exc.headers, exc.read())
        except urllib.error.URLError as exc:
            reason = exc.reason
            text = getattr(reason, "strerror", None) or str(reason)
            raise ClientError(f"cannot reach the admin API at {self.base}: {text.lower()}") from None
        except TimeoutError:
            raise ClientError(f"the admin API at {self.base} did not answer within {TIMEOUT:g} s") from None
        except (ConnectionError, OSError) as exc:
            raise ClientError(f"cannot reach the admin API at {self.base}: {exc.strerror or exc}") from None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is answered as it is: following it would send the token
    (and a purge turned into a GET) to wherever it points."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


# No proxies from the environment either: the token goes to --admin only.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())


def _answer(status: int, headers, body: bytes) -> Answer:
    try:
        data: Any = json.loads(body) if body else None
    except ValueError:
        data = body.decode(errors="replace")
    return Answer(status, {k: v for k, v in headers.items()}, data)
