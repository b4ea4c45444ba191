"""Fuzzing the admin API from its own /openapi.json with schemathesis:
valid and invalid requests for every operation, a bounded number of
examples each; no 5xx, and every answer as documented."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from edge.app import Node
from edge.config import default_config
from edge.config_tls import ListenAddress
from edge.policy.sources import DirectorySource
from tests.admin_support import OPERATOR, SHOP, admin_config

EXAMPLES = 12  # per operation, mode and token: about 600 requests in all
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


class NodeThread:
    """A node on its own event loop in a thread, so that schemathesis'
    synchronous client can talk to it from the test."""

    def __init__(self, tmp_path: Path) -> None:
        pdir = tmp_path / "policies"
        pdir.mkdir()
        for tenant in ("shop", "news"):
            (pdir / f"{tenant}.json").write_text(json.dumps({"hosts": [f"{tenant}.test"],
                                                             "origins": [{"url": "http://127.0.0.1:1"}]}))
        config = default_config()
        config = dataclasses.replace(
            config,
            listen=(ListenAddress("127.0.0.1", 0),),
            cache=dataclasses.replace(config.cache, disk_path=tmp_path / "cache"),
            log=dataclasses.replace(config.log, access=False),
            policies=dataclasses.replace(config.policies, watch_interval=0),
            admin=admin_config(),
        )
        source = DirectorySource(pdir)
        source.load()
        self.node = Node(config, source)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.node.start(), self.loop).result(30)
        self.node.admin.ctx.limiter.limit = 1 << 30  # (auth failures have their own tests)
        return f"http://127.0.0.1:{self.node.admin.port}"

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self.node.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def _fuzz(strategy, base: str, token: str, failures: list[str], counter: list[int]) -> None:
    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def run(case) -> None:
        headers = dict(case.headers or {})
        headers["Authorization"] = f"Bearer {token}"  # generated ones would only meet the limiter
        response = case.call(base_url=base, headers=headers, timeout=10)
        counter[0] += 1
        try:
            case.validate_response(response, checks=CHECKS)
        except AssertionError as exc:
            failures.append(f"{case.method} {case.formatted_path} -> {response.status_code}: {exc}"[:1500])

    try:
        run()
    except Unsatisfiable:
        pass  # nothing invalid to generate (negative mode for an operation without inputs)


def test_schemathesis_finds_no_server_error_and_no_undocumented_answer(tmp_path):
    with NodeThread(tmp_path) as base:
        schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
        failures: list[str] = []
        counter = [0]
        operations = [result.ok() for result in schema.get_all_operations()]
        # Deletions last: the tenants stay for the other operations to reach.
        for operation in sorted(operations, key=lambda op: op.method.upper() == "DELETE"):
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                # Free tenant ids (mostly invalid), and the existing tenant with
                # an operator and with its own tenant token, to reach the writes.
                for token, tenant in ((OPERATOR, None), (OPERATOR, "shop"), (SHOP, "shop")):
                    if tenant is not None and "{tenant}" not in operation.path:
                        continue
                    params = {"tenant": tenant} if tenant else None
                    strategy = operation.as_strategy(generation_mode=mode, path_parameters=params)
                    _fuzz(strategy, base, token, failures, counter)
        assert counter[0] > 200
        assert not failures, "\n\n".join(failures[:5])
