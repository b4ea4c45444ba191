"""Helpers for the admin API tests: tokens, an admin-enabled node config,
and a client that checks every JSON answer against ``/openapi.json``."""
from __future__ import annotations

import hashlib
import json
from typing import Any

import aiohttp
from jsonschema import Draft202012Validator
from multidict import CIMultiDict

from edge.admin.openapi import document
from edge.config import AdminConfig, AdminToken
from edge.config_tls import ListenAddress

_json = json  # Api.call has a parameter named json

OPERATOR = "operator-token-0123456789"
SHOP = "shop-token-0123456789"
NEWS = "news-token-0123456789"


def token(value: str, tenant: str) -> AdminToken:
    return AdminToken(hashlib.sha256(value.encode()).digest(), tenant)


TOKENS = (token(OPERATOR, "*"), token(SHOP, "shop"), token(NEWS, "news"))


def admin_config(**changes: Any) -> AdminConfig:
    changes.setdefault("enabled", True)
    changes.setdefault("listen", ListenAddress("127.0.0.1", 0))
    changes.setdefault("tokens", TOKENS)
    changes.setdefault("failed_auth_delay", 0.01)  # the tests count delayed attempts, they don't wait them out
    return AdminConfig(**changes)


def policy(origin_url: str, *hosts: str, **extra: Any) -> dict[str, Any]:
    return {"hosts": list(hosts), "origins": [{"url": origin_url}], **extra}


class OpenApiCheck:
    """Validates an answer against the document: the route, method and
    status must be described, and a JSON body must fit the schema."""

    def __init__(self) -> None:
        self.doc = document()
        self.seen: set[tuple[str, str, int]] = set()

    def validate(self, method: str, template: str, status: int, content_type: str, body: bytes) -> None:
        op = self.doc["paths"][template][method.lower()]
        response = op["responses"].get(str(status))
        assert response is not None, f"{method} {template}: status {status} is not in the OpenAPI document"
        self.seen.add((method, template, status))
        if status == 204:
            assert "content" not in response and not body, f"{method} {template}: 204 with a body"
            return
        media = content_type.split(";")[0].strip()
        content = response.get("content", {})
        assert media in content, f"{method} {template} {status}: {media} not documented ({list(content)})"
        if media != "application/json":
            return
        schema = {"components": self.doc["components"], "allOf": [content[media]["schema"]]}
        Draft202012Validator(schema).validate(json.loads(body))


class Api:
    """``await api.call("PUT", "/v1/tenants/{tenant}/policy", tenant="shop", json=..., token=SHOP)``."""

    def __init__(self, session: aiohttp.ClientSession, base: str, check: OpenApiCheck) -> None:
        self.session = session
        self.base = base
        self.check = check

    async def call(self, method: str, template: str, *, token: str | None = OPERATOR, json: Any = None,
                   data: bytes | None = None, headers: dict[str, str] | None = None,
                   **params: str) -> tuple[int, CIMultiDict, Any]:
        path = template.format(**params)
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        async with self.session.request(method, self.base + path, json=json, data=data, headers=h) as r:
            body = await r.read()
            content_type = r.headers.get("Content-Type", "")
            assert r.headers.get("Cache-Control") == "no-store"
            assert r.headers.get("Server") == "edge" and r.headers.get("X-Content-Type-Options") == "nosniff"
            self.check.validate(method, template, r.status, content_type, body)
            parsed = _json.loads(body) if body and content_type.startswith("application/json") else body.decode()
            return r.status, CIMultiDict(r.headers), parsed
