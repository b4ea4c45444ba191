"""policies/schema.json and the validator describe the same format, key for key."""
from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from edge.policy import PolicyError, parse_policy, parse_size, to_data
from edge.policy.parse import accepted_paths
from edge.waf.rules import rule_ids

REPO = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((REPO / "policies" / "schema.json").read_text())

# Every key the format has, each used once, in a policy the validator accepts.
EVERYTHING: dict[str, Any] = {
    "$schema": "./schema.json",
    "$comment": "c",
    "hosts": ["shop.example", "*.shop.example"],
    "origins": [{
        "$comment": "c", "url": "http://10.0.0.5:8080", "host_header": "shop.example",
        "connect_timeout": 2, "read_timeout": 20, "max_connections": 50, "set_by": "operator",
    }, {
        "url": "https://10.0.0.6", "ca": trustme.CA().cert_pem.bytes().decode(), "server_name": "origin.shop.example",
        "verify": True, "client_certificate": True,
    }],
    "origin_failover": {"$comment": "c", "retry_on_status": [502], "failures_before_down": 2, "cooldown": 5},
    "cache": {
        "$comment": "c", "enabled": True, "max_object_size": "10MiB", "strip_set_cookie": True,
        "heuristic_fraction": 0.2, "heuristic_max": 600,
        "stale_while_revalidate": 30, "stale_if_error": 600, "client_no_cache": "ignore",
        "targeted_field": "Edge-Cache-Control", "disk_quota": "2GB",
        "key": {
            "$comment": "c", "tracking_params": ["utm_*"], "drop_params": ["ref"], "keep_params": None,
            "sort_params": False, "headers": ["accept-language"], "cookies": ["lang"],
        },
    },
    "rules_case_insensitive": False,
    "rules": [
        {
            "$comment": "c",
            "match": {"$comment": "c", "path_prefix": "/static/", "path_glob": "/static/*.css"},
            "edge_ttl": {"$comment": "c", "override": 60},
            "browser_ttl": {"$comment": "c", "default": 30},
            "bypass": False,
            "key": {
                "$comment": "c", "tracking_params": [], "drop_params": ["v"], "keep_params": ["page"],
                "sort_params": True, "headers": ["x-device"], "cookies": [],
            },
        },
        {
            "match": {"content_type": ["text/html"]},
            "edge_ttl": {"default": 10},
            "browser_ttl": {"override": 0},
        },
    ],
    "delivery": {
        "$comment": "c", "allow_countries": ["DE", "at"], "deny_countries": ["AT"], "unknown": "deny",
        "action": "redirect", "redirect_url": "https://example.de/unavailable",
        "exempt_cidrs": ["192.0.2.0/24", "2001:db8::/32"], "edge_countries": ["DE"],
        "in_region_url": "https://de.cdn.example.de",
    },
    "filters": {
        "$comment": "c",
        "ip_lists": {"$comment": "c", "mode": "log", "allow": ["192.0.2.0/24"], "deny": ["198.51.100.0/24"]},
        "rate_limits": {"$comment": "c", "mode": "block", "rules": [
            {"$comment": "c", "id": "login", "path_prefix": "/login", "per": "client", "rate": 5, "burst": 10},
        ]},
        "under_attack": {
            "$comment": "c", "mode": "auto", "auto_rps": 200, "auto_hold": 600, "difficulty": 18,
            "cookie_ttl": 7200, "exclude_paths": ["/api/"],
        },
        "request_limits": {
            "$comment": "c", "mode": "log", "methods": ["GET", "POST"], "max_url_length": 4096, "max_query_length": 2048,
            "max_headers": 50, "max_header_bytes": "16KiB", "max_body_size": "1MiB", "max_concurrent": 32,
            "origin_share": 0.5,
        },
        "waf": {
            "$comment": "c", "mode": "log", "threshold": 10, "paranoia": 2, "inspect_body": False, "max_body": 4096,
            "exclusions": [{"$comment": "c", "rule": sorted(rule_ids())[0], "path_prefix": "/search"}],
        },
        "events": {
            "$comment": "c", "webhook_url": "https://hooks.example/edge", "secret": "0123456789abcdef0123",
            "tenant_threshold": 500, "client_threshold": 50, "window": 120, "set_by": "tenant",
        },
    },
    "tls": {
        "$comment": "c", "redirect_http": True, "min_version": "1.3", "acme": True,
        "hsts": {"$comment": "c", "max_age": 31536000, "include_subdomains": True, "preload": True},
    },
}


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target = SCHEMA
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def schema_properties(node: dict[str, Any] = SCHEMA, prefix: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """(path, resolved schema) for every property, lists marked "[]" as in accepted_paths()."""
    for key, sub in resolve(node).get("properties", {}).items():
        sub = resolve(sub)
        path = prefix + key
        yield path, sub
        items = resolve(sub.get("items", {}))
        if "properties" in items:
            yield from schema_properties(items, path + "[].")
        elif "properties" in sub:
            yield from schema_properties(sub, path + ".")


def document_paths(doc: Any, prefix: str = "") -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(path with [], path with indices as errors name it, the object) for every key of every object."""
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield prefix + key, prefix + key, doc
            if isinstance(value, dict):
                for a, b, o in document_paths(value, ""):
                    yield f"{prefix}{key}.{a}", f"{prefix}{key}.{b}", o
            elif isinstance(value, list):
                for i, item in enumerate(value):
                    for a, b, o in document_paths(item, ""):
                        yield f"{prefix}{key}[].{a}", f"{prefix}{key}[{i}].{b}", o


SCHEMA_PATHS = {path for path, _ in schema_properties()}


def test_the_validator_and_the_schema_accept_the_same_keys():
    assert accepted_paths() - SCHEMA_PATHS == set(), "accepted by the validator, missing from schema.json"
    assert SCHEMA_PATHS - accepted_paths() == set(), "in schema.json, unknown to the validator"


def test_the_validator_accepts_every_key_of_the_schema_where_the_schema_puts_it():
    assert {a for a, _, _ in document_paths(EVERYTHING)} == SCHEMA_PATHS, "EVERYTHING must use every key once"
    parse_policy(EVERYTHING, tenant="shop", source="shop.json")


def test_the_validator_rejects_an_unknown_key_in_every_object_of_the_schema():
    objects: dict[str, str] = {}
    for _, indexed, _ in document_paths(EVERYTHING):
        parent = indexed.rpartition(".")[0]
        objects.setdefault(parent, parent)
    for parent in objects:
        doc = copy.deepcopy(EVERYTHING)
        target: Any = doc
        for part in filter(None, parent.replace("[", ".").replace("]", "").split(".")):
            target = target[int(part)] if isinstance(target, list) else target[part]
        target["surplus"] = 1
        with pytest.raises(PolicyError) as info:
            parse_policy(doc, tenant="shop", source="shop.json")
        field = f"{parent}.surplus" if parent else "surplus"
        assert [e.field for e in info.value.errors] == [field]


def test_every_property_is_described():
    undescribed = [path for path, sub in schema_properties() if not sub.get("description")]
    assert undescribed == []


def test_schema_defaults_are_the_validators_defaults():
    effective = to_data(parse_policy({}, tenant="shop", source="shop.json",
                                     quick_origin="http://o.example"))
    checked = 0
    for path, sub in schema_properties():
        if "default" not in sub or path.startswith("rules[]") or "[]." in path:
            continue
        value: Any = effective
        for part in path.split("."):
            if value is None:  # inside an object that is null by default (tls.hsts)
                break
            if part.endswith("[]"):
                value = value[part[:-2]][0]
            else:
                value = value[part]
        if value is None and sub["default"] is not None:
            continue
        default = sub["default"]
        if "max_object_size" in path:
            default = parse_size(default)
        assert value == default, path
        checked += 1
    assert checked >= 15


def test_shipped_policies_are_valid_against_the_schema():
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(SCHEMA)
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    files = [REPO / "policies" / "demo.json", *sorted((REPO / "policies" / "examples").glob("*.json"))]
    assert len(files) >= 3
    for path in files:
        errors = [e.message for e in validator.iter_errors(json.loads(path.read_text()))]
        assert errors == [], path
    assert list(validator.iter_errors(EVERYTHING)) == []


@pytest.mark.parametrize(
    "doc",
    [
        {"rules": [{"edge_ttl": {"override": 1, "default": 2}}]},
        {"rules": [{"match": {"content_type": ["text/html"]}, "key": {"cookies": ["x"]}}]},
        {"rules": [{"match": {"path_prefix": "/x"}}]},
        {"cache": {"max_object_size": "1PB"}},
        {"cache": {"disk_quota": -1}},
        {"cache": {"disk_quota": 0}},
        {"cache": {"disk_quota": "lots"}},
        {"cache": {"disk_quota": (1 << 50) + 1}},
        {"cache": {"ttl": 1}},
        {"origins": [{"url": "http://o.example/path"}]},
        {"tls": {"hsts": {"include_subdomains": True}}},
        {"tls": {"hsts": {"max_age": 63072001}}},
        {"tls": {"hsts": {"max_age": 31535999, "include_subdomains": True, "preload": True}}},
        {"tls": {"hsts": {"max_age": 31536000, "preload": True}}},
        {"tls": {"min_version": "1.1"}},
        {"tls": {"redirect_http": "yes"}},
    ],
)
def test_the_schema_rejects_what_the_validator_rejects(doc):
    jsonschema = pytest.importorskip("jsonschema")
    assert list(jsonschema.Draft202012Validator(SCHEMA).iter_errors(doc)) != []
    with pytest.raises(PolicyError):
        parse_policy(doc, tenant="shop", source="shop.json", quick_origin="http://o.example")


# filters.waf.max_body: 0 would inspect no body where a reader of "0" may
# expect no limit, so it is refused, by the validator and the schema alike.
MAX_BODIES = [
    (1, None),
    (4096, None),
    (16 * 1024 * 1024, None),
    (0, "0"),
    (-1, "-1"),
    (16 * 1024 * 1024 + 1, "16777217"),
    ("64KiB", '"64KiB"'),
    (True, "true"),
    (1.5, "1.5"),
]


@pytest.mark.parametrize(("value", "found"), MAX_BODIES, ids=[repr(v) for v, _ in MAX_BODIES])
def test_waf_max_body_is_a_bound_of_one_byte_or_more(value, found):
    jsonschema = pytest.importorskip("jsonschema")
    doc = {"filters": {"waf": {"max_body": value}}}
    schema_ok = not list(jsonschema.Draft202012Validator(SCHEMA).iter_errors(doc))
    try:
        policy = parse_policy(doc, tenant="shop", source="shop.json", quick_origin="http://o.example")
    except PolicyError as e:
        assert [str(x) for x in e.errors] == [
            f"shop.json: filters.waf.max_body: expected an integer number of bytes 1..16777216"
            f' (to inspect no body: "inspect_body": false), found {found}'
        ]
        assert not schema_ok
    else:
        assert found is None and schema_ok and policy.filters.waf.max_body == value


# --- sizes: one grammar, in the validator and in the schema --------------------------------

SIZE_FIELDS = ["cache.max_object_size", "cache.disk_quota", "filters.request_limits.max_header_bytes",
               "filters.request_limits.max_body_size"]


def string_patterns(node: dict[str, Any]) -> list[str]:
    """The patterns of the string alternatives of ``node``."""
    node = resolve(node)
    found = [node["pattern"]] if node.get("type") == "string" and "pattern" in node else []
    for key in ("oneOf", "anyOf"):
        for sub in node.get(key, ()):
            found += string_patterns(sub)
    return found


# (text, accepted by the size grammar). Every amount is within 1024 TiB:
# beyond it, and below each field's minimum, is a bound the validator
# checks per field, as the schema's integer alternatives do.
SIZE_TEXTS = [
    ("4096", True), (" 4096 ", True), ("0", True), ("4096.", True), ("4096.000", True), (".0", True),
    ("1B", True), ("1b", True), ("1KB", True), ("1kb", True), ("1Kb", True), ("1KiB", True), ("1kib", True),
    ("1MB", True), ("1MiB", True), ("1GB", True), ("1gib", True), ("1TB", True), ("1TiB", True), ("1tIb", True),
    ("1.5MiB", True), ("1.5 mb", True), ("\t2 GB\n", True), (".5TB", True), ("10.KiB", True), ("0.001KB", True),
    ("1000TiB", True), ("1.25e0KB", False),
    ("", False), (" ", False), ("1.5", False), ("4096.01", False), ("-1", False), ("-1KB", False), ("+1KB", False),
    ("1e3", False), ("1 K", False), ("1KBB", False), ("1KB B", False), ("1PB", False), ("1PiB", False),
    ("1ib", False), ("KB", False), (".", False), (".KB", False), ("1..0KB", False), ("1,5MB", False),
    ("0x10", False), ("1_000", False), ("\u0661\u0662", False), ("\u00bdKB", False), ("1 bit", False),
]


def size_patterns() -> dict[str, list[str]]:
    out = {}
    for field in SIZE_FIELDS:
        node: dict[str, Any] = SCHEMA
        for part in field.split("."):
            node = resolve(node)["properties"][part]
        out[field] = string_patterns(node)
    return out


def test_every_size_field_of_the_schema_takes_a_size_string():
    assert all(size_patterns().values())


@pytest.mark.parametrize(("text", "accepted"), SIZE_TEXTS, ids=[repr(t) for t, _ in SIZE_TEXTS])
def test_the_schema_reads_a_size_string_as_the_validator_does(text, accepted):
    try:
        parse_size(text)
    except ValueError:
        assert not accepted, "the validator refuses it"
    else:
        assert accepted, "the validator accepts it"
    for field, patterns in size_patterns().items():
        for pattern in patterns:
            assert (re.search(pattern, text) is not None) == accepted, field
