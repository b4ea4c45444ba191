"""The OpenAPI 3.1 document of the admin API, served as ``/openapi.json``.

Written by hand next to ``app.ROUTES``; a test checks that every route is
here and that the integration tests' responses validate against it. The
policy's own JSON Schema (``policies/schema.json``) is included, its
``$defs`` lifted into ``components/schemas`` as ``Policy.<name>``.
"""
from __future__ import annotations

import copy
import functools
import json
from typing import Any

from edge.policy.load import RESERVED_TENANTS
from edge.shipped import policies_dir
from edge.tls.certs import MAX_PEM_BYTES, NAME_PATTERN, NAME_RULE

# Stated here and enforced by the routes (app.py), which serve this document.
MAX_BODY = 1 << 20  # request bodies: policies are at most 1 MiB as files, too

_SCHEMA_FILE = policies_dir() / "schema.json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _policy_schemas() -> dict[str, Any]:
    try:
        schema = json.loads(_SCHEMA_FILE.read_text())
    except (OSError, ValueError):  # an installation without the policies directory
        return {"Policy": {"type": "object", "description": "A tenant policy; see policies/README.md."}}
    defs = schema.pop("$defs", {})
    schema.pop("$schema", None)

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            out = {}
            for key, value in node.items():
                if key == "$ref" and isinstance(value, str) and value.startswith("#/$defs/"):
                    out[key] = "#/components/schemas/Policy." + value[len("#/$defs/"):]
                else:
                    out[key] = rewrite(value)
            return out
        if isinstance(node, list):
            return [rewrite(v) for v in node]
        return node

    out = {"Policy": rewrite(schema)}
    for name, value in defs.items():
        out[f"Policy.{name}"] = rewrite(value)
    return out


_ERRORS = {
    400: ("Malformed request: bad JSON, an invalid or reserved tenant id, an invalid certificate name, a path with "
          "dot segments or encoded slashes. "
          "A request the HTTP parser rejects (broken framing such as Content-Length with Transfer-Encoding) "
          "gets a text/plain 400 and the connection is closed."),
    401: "No token, a malformed Authorization header or an unknown token (WWW-Authenticate: Bearer).",
    403: ("The token may not do this: a tenant token on another tenant or on an operator endpoint, "
          "changing hosts, or writing an origin or webhook URL on an internal address."),
    404: "No such tenant, certificate (or endpoint).",
    405: "Method not allowed on this endpoint.",
    409: ("Conflict: no policy directory to write to (a node reading one policy file), the node did not take the "
          "change, or the tenant holds as many certificates as certificates.max_per_tenant allows."),
    412: "If-Match does not name the current version (ETag) of the policy.",
    413: f"Request body over {MAX_BODY} bytes.",
    422: ("The body is valid JSON but not a valid policy, purge request or certificate upload; details name the "
          "fields. Nothing changed."),
    421: ("Misdirected request: the Host header names neither a loopback name or address, nor the listener's own "
          "address, nor one of admin.hosts (protection against DNS rebinding)."),
    429: ("Too many failed authentication attempts from this address or with this token (Retry-After says when "
          "to try again). A valid token is never refused with 429."),
    500: "Internal error (logged by the node; never a traceback).",
    503: "Not every worker acknowledged the change (details name them), or not ready.",
}


def _error(status: int) -> dict[str, Any]:
    response: dict[str, Any] = {"description": _ERRORS[status], "content": {"application/json": {"schema": _ref("Error")}}}
    if status == 400:
        response["content"]["text/plain"] = {"schema": {"type": "string"}}
    if status == 401:
        response["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer"}}
    if status == 429:
        response["headers"] = {"Retry-After": {"schema": {"type": "string"}, "description": "seconds"}}
    return response


def _ok(description: str, schema: dict[str, Any], *, etag: bool = False) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": schema}}}
    if etag:
        response["headers"] = {"ETag": {"schema": {"type": "string"}, "description": 'The policy version, quoted: "<version>"'}}
    return response


def _op(summary: str, responses: dict[int | str, Any], errors: tuple[int, ...], *, public: bool = False,
        body: dict[str, Any] | None = None, params: list[dict[str, Any]] | None = None,
        description: str = "") -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {}}
    if description:
        op["description"] = description
    for status, response in responses.items():
        op["responses"][str(status)] = response
    for status in (*errors, 405, 421, 500):
        op["responses"].setdefault(str(status), _error(status))
    if not public:
        for status in (401, 429):
            op["responses"].setdefault(str(status), _error(status))
    else:
        op["security"] = []
    if body is not None:
        op["requestBody"] = body
    if params:
        op["parameters"] = params
    return op


_TENANT = {
    "name": "tenant", "in": "path", "required": True,
    "description": "Tenant id: ^[a-z0-9][a-z0-9_-]{0,62}$ and none of the reserved names "
                   f"({', '.join(sorted(RESERVED_TENANTS))}); 400 otherwise.",
    "schema": {"type": "string"},
}
_IF_MATCH = {
    "name": "If-Match", "in": "header", "required": False,
    "description": 'The ETag of the version this change is based on ("<version>", or *): 412 when it is not '
                   "the current one. Without it the write is unconditional.",
    "schema": {"type": "string"},
}


def _json_body(schema: dict[str, Any], description: str, example: Any,
               media: tuple[str, ...] = ("application/json",)) -> dict[str, Any]:
    return {"required": True, "description": description,
            "content": {m: {"schema": schema, "example": example} for m in media}}


_CERTIFICATE_NAME = {
    "name": "name", "in": "path", "required": True,
    "description": f"The certificate's name within the tenant: {NAME_RULE} ('..' never); 400 otherwise.",
    "schema": {"type": "string", "pattern": f"^{NAME_PATTERN.pattern}$"},
}
_PEM = "-----BEGIN CERTIFICATE-----\n...\n-----END CERTIFICATE-----\n"
_UPLOAD_EXAMPLE = {"certificate": _PEM + _PEM.replace("...", "(intermediate)"),
                   "private_key": "-----BEGIN PRIVATE KEY-----\n...\n-----END PRIVATE KEY-----\n"}

_POLICY_EXAMPLE = {
    "hosts": ["shop.example.de", "*.shop.example.de"],
    "origins": [{"url": "http://10.0.0.5:8080", "host_header": "shop.example.de"}],
    "rules": [{"match": {"path_prefix": "/static/"}, "edge_ttl": {"override": 86400}}],
}
_DELIVERY_EXAMPLE = {"allow_countries": ["DE"], "unknown": "deny", "action": "block"}


@functools.cache
def _document() -> dict[str, Any]:
    tenant_path = [_TENANT]
    write_params = [_TENANT, _IF_MATCH]
    written = _ok("The policy was written and every worker serves it.", _ref("PolicyWritten"), etag=True)
    paths: dict[str, Any] = {
        "/healthz": {"get": _op("Liveness: the process answers", {200: _ok("Alive.", _ref("Health"))}, (), public=True)},
        "/readyz": {"get": _op(
            "Readiness: policies loaded, GeoIP loaded (if configured), disk tier writable",
            {200: _ok("Ready.", _ref("Ready")),
             503: {"description": "Not ready; details and checks say which check failed.",
                   "content": {"application/json": {"schema": _ref("NotReady")}}}},
            (), public=True)},
        "/openapi.json": {"get": _op("This document", {200: _ok("OpenAPI 3.1.", {"type": "object"})}, (), public=True)},
        "/metrics": {"get": _op(
            "Prometheus metrics of the node, all workers together (operator token)",
            {200: {"description": "Prometheus text exposition format.",
                   "content": {"text/plain": {"schema": {"type": "string"}}}}},
            (403,))},
        "/v1/stats": {"get": _op("Cache tiers, requests per tenant, uptime, policy versions (operator token)",
                                 {200: _ok("Statistics of the node, all workers together.", _ref("Stats"))}, (403,))},
        "/v1/tenants": {"get": _op(
            "Tenants: all for an operator token, its own for a tenant token",
            {200: _ok("The tenants.", {"type": "array", "items": _ref("TenantSummary")})}, ())},
        "/v1/tenants/{tenant}/policy": {
            "get": _op("The tenant's effective policy, every default spelled out",
                       {200: _ok("The policy.", _ref("Policy"), etag=True)}, (400, 403, 404), params=tenant_path),
            "put": _op(
                "Create or replace the tenant's policy",
                {200: written, 201: _ok("The tenant was created.", _ref("PolicyWritten"), etag=True)},
                (400, 403, 409, 412, 413, 422, 503), params=write_params,
                body=_json_body(_ref("Policy"), "The whole policy file.", _POLICY_EXAMPLE),
                description="Validated completely first (422 lists every error, nothing changes). Without If-Match "
                            "it creates or replaces; creating a tenant needs an operator token. The file is "
                            "written atomically and durably, and the answer is sent once every worker serves it."),
            "patch": _op(
                "Change part of the tenant's policy (JSON Merge Patch, RFC 7396)",
                {200: written}, (400, 403, 404, 409, 412, 413, 422, 503), params=write_params,
                body=_json_body({"type": "object"}, "A merge patch applied to the policy file as stored: "
                                "null removes a key, objects merge, anything else replaces.",
                                {"cache": {"heuristic_max": 3600}, "delivery": None},
                                ("application/merge-patch+json", "application/json"))),
            "delete": _op(
                "Remove the tenant (operator token)",
                {200: _ok("The tenant is no longer served by any worker.", _ref("PolicyDeleted"))},
                (400, 403, 404, 409, 412, 503), params=write_params),
        },
        "/v1/tenants/{tenant}/policy/delivery": {
            "put": _op(
                "Replace the delivery section of the tenant's policy",
                {200: written}, (400, 403, 404, 409, 412, 413, 422, 503), params=write_params,
                body=_json_body(_ref("Policy.delivery"), "The delivery section.", _DELIVERY_EXAMPLE)),
        },
        "/v1/tenants/{tenant}/certificates": {
            "get": _op("The tenant's certificates (metadata, never a key)",
                       {200: _ok("The certificates, by name.", {"type": "array", "items": _ref("Certificate")})},
                       (400, 403, 404, 409), params=tenant_path),
        },
        "/v1/tenants/{tenant}/certificates/{name}": {
            "get": _op("One certificate of the tenant (metadata, never a key)",
                       {200: _ok("The certificate.", _ref("Certificate"))}, (400, 403, 404, 409),
                       params=[_TENANT, _CERTIFICATE_NAME]),
            "put": _op(
                "Store or replace a certificate of the tenant",
                {200: _ok("Stored; every worker serves it to new handshakes.", _ref("Certificate"))},
                (400, 403, 404, 409, 413, 422, 503), params=[_TENANT, _CERTIFICATE_NAME],
                body=_json_body(_ref("CertificateUpload"), "The chain and its private key.", _UPLOAD_EXAMPLE),
                description="Checked completely first (422 names the field, nothing changes): the key matches the "
                            "leaf, the chain is in order (leaf first, then each issuer), the leaf is valid now by "
                            "the node's clock, RSA keys have at least 2048 bits and ECDSA keys are P-256 or P-384, "
                            "an encrypted key comes with its passphrase, and every subjectAltName DNS name is "
                            "served by the tenant (a wildcard name only when the tenant serves every name it "
                            "covers). Then stored atomically (key mode 0600, never logged) and taken by every "
                            "worker before the answer."),
            "delete": _op("Remove a certificate of the tenant",
                          {204: {"description": "Removed; no worker serves it any more."}},
                          (400, 403, 404, 409, 503), params=[_TENANT, _CERTIFICATE_NAME]),
        },
        "/v1/tenants/{tenant}/purge": {
            "post": _op(
                "Purge cached entries of the tenant",
                {200: _ok("Purged in the disk tier and in the memory of every worker.", _ref("PurgeResult"))},
                (400, 403, 404, 413, 422, 503), params=tenant_path,
                body=_json_body(_ref("PurgeRequest"), "What to purge.",
                                {"urls": ["https://shop.example.de/index.html", "/static/site.css"]})),
        },
    }
    schemas: dict[str, Any] = {
        "Error": {
            "type": "object",
            "required": ["error", "details"],
            "properties": {
                "error": {"type": "string"},
                "details": {"type": "array", "items": {
                    "type": "object", "required": ["field", "message"], "additionalProperties": False,
                    "properties": {"field": {"type": "string"}, "message": {"type": "string"}}}},
                "current": {"type": ["string", "null"], "description": "412: the current version"},
            },
        },
        "Health": {"type": "object", "required": ["status"], "properties": {"status": {"const": "ok"}}},
        "Check": {"type": "object", "required": ["ok", "message"],
                  "properties": {"ok": {"type": "boolean"}, "message": {"type": "string"}}},
        "Ready": {"type": "object", "required": ["status", "checks"],
                  "properties": {"status": {"const": "ready"},
                                 "checks": {"type": "object", "additionalProperties": _ref("Check")}}},
        "NotReady": {"allOf": [_ref("Error"), {
            "type": "object", "required": ["status", "checks"],
            "properties": {"status": {"const": "not ready"},
                           "checks": {"type": "object", "additionalProperties": _ref("Check")}}}]},
        "Tier": {"type": "object", "required": ["entries", "bytes"],
                 "properties": {"entries": {"type": ["integer", "null"]}, "bytes": {"type": ["integer", "null"]}}},
        "Stats": {
            "type": "object",
            "required": ["worker", "workers", "uptime_seconds", "tiers", "requests", "policies",
                         "certificates_expiring"],
            "properties": {
                "worker": {"type": "integer", "description": "pid of the answering worker"},
                "workers": {"type": "array", "description": "the node's live workers",
                            "items": {"type": "object", "required": ["worker", "uptime_seconds"],
                                      "properties": {"worker": {"type": "integer"},
                                                     "uptime_seconds": {"type": "number"},
                                                     "certificate_changes": {
                                                         "type": "integer",
                                                         "description": "certificate writes and removals the "
                                                                        "worker has taken since it started"}}}},
                "uptime_seconds": {"type": "number", "description": "of the longest-running live worker"},
                "tiers": {"type": "object", "additionalProperties": _ref("Tier")},
                "requests": {"type": "object", "additionalProperties": {"type": "integer"}},
                "policies": {"type": "object", "additionalProperties": {"type": "string"}},
                "certificates_expiring": {
                    "type": "array", "description": "certificates with less than 30 days left (or expired), "
                                                    "the soonest first",
                    "items": {"type": "object",
                              "required": ["tenant", "name", "hosts", "not_after", "expires_in_seconds"],
                              "properties": {"tenant": {"type": "string"}, "name": {"type": "string"},
                                             "hosts": {"type": "array", "items": {"type": "string"}},
                                             "not_after": {"type": "string", "format": "date-time"},
                                             "expires_in_seconds": {"type": "integer"}}}},
            },
        },
        "Certificate": {
            "type": "object",
            "required": ["name", "hosts", "not_before", "not_after", "fingerprint_sha256", "key_type"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string"},
                "hosts": {"type": "array", "items": {"type": "string"},
                          "description": "the leaf's subjectAltName DNS names, lower case"},
                "not_before": {"type": "string", "format": "date-time"},
                "not_after": {"type": "string", "format": "date-time"},
                "fingerprint_sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$",
                                       "description": "SHA-256 of the leaf's DER, hex"},
                "key_type": {"type": "string", "pattern": "^(rsa-[0-9]+|ecdsa-p256|ecdsa-p384)$",
                             "description": "rsa-<bits> (2048 or more), ecdsa-p256 or ecdsa-p384"},
            },
        },
        "CertificateUpload": {
            "type": "object",
            "required": ["certificate", "private_key"],
            "additionalProperties": False,
            "properties": {
                "certificate": {"type": "string", "minLength": 1, "maxLength": MAX_PEM_BYTES,
                                "description": "PEM: the leaf first, then each issuer up to (not necessarily "
                                               "including) the root"},
                "private_key": {"type": "string", "minLength": 1, "maxLength": MAX_PEM_BYTES,
                                "description": "PEM: the leaf's key (PKCS#8, PKCS#1 or SEC1; encrypted only "
                                               "with passphrase)"},
                "passphrase": {"type": ["string", "null"], "description": "decrypts an encrypted private_key; "
                                                                          "never stored or logged"},
            },
        },
        "TenantSummary": {
            "type": "object", "required": ["tenant", "hosts", "version"],
            "properties": {"tenant": {"type": "string"}, "hosts": {"type": "array", "items": {"type": "string"}},
                           "version": {"type": "string"}},
        },
        "PolicyWritten": {
            "type": "object", "required": ["tenant", "version", "hosts"],
            "properties": {"tenant": {"type": "string"}, "version": {"type": "string"},
                           "hosts": {"type": "array", "items": {"type": "string"}}},
        },
        "PolicyDeleted": {
            "type": "object", "required": ["tenant", "deleted", "version"],
            "properties": {"tenant": {"type": "string"}, "deleted": {"const": True}, "version": {"type": "string"}},
        },
        "PurgeRequest": {
            "type": "object",
            "description": "Exactly one of urls, prefixes, tags or all, optionally soft (entries expire and may "
                           "still be served stale instead of being removed). URLs and prefixes are absolute "
                           "http(s) URLs of one of the tenant's hosts, or paths starting with / (every host of "
                           "the tenant); tags come from the origin's Surrogate-Key and Cache-Tag fields.",
            "additionalProperties": False,
            "minProperties": 1,
            "properties": {
                "urls": {"type": "array", "minItems": 1, "maxItems": 1000, "items": {"type": "string", "minLength": 1}},
                "prefixes": {"type": "array", "minItems": 1, "maxItems": 1000,
                             "items": {"type": "string", "minLength": 1}},
                "tags": {"type": "array", "minItems": 1, "maxItems": 1000,
                         "items": {"type": "string", "minLength": 1, "maxLength": 1024}},
                "all": {"const": True},
                "soft": {"type": "boolean"},
            },
        },
        "PurgeResult": {
            "type": "object", "required": ["purge_id", "affected"],
            "properties": {"purge_id": {"type": "string", "format": "uuid"},
                           "affected": {"type": "integer", "minimum": 0},
                           "workers": {"type": "integer", "minimum": 1}},
        },
    }
    schemas.update(_policy_schemas())
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "edge admin API",
            "version": "1",
            "description": "Administration of one edge node: tenants' policies, certificates and purges, health and metrics. "
                           "JSON everywhere; errors are {\"error\": ..., \"details\": [{\"field\", \"message\"}]}. "
                           "Authenticate with Authorization: Bearer <token>; operator tokens may do everything, "
                           "tenant tokens only their own tenant. Every answer carries Server: edge, "
                           "X-Content-Type-Options: nosniff and Cache-Control: no-store.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas,
        },
    }


def document() -> dict[str, Any]:
    return copy.deepcopy(_document())
