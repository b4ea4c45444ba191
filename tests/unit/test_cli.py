"""The command line's own checks (edge/cli.py), before anything starts."""
from __future__ import annotations

import pytest

from edge.cli import build_parser
from edge.policy.errors import PolicyError
from edge.policy.parse import parse_policy

# --origin takes exactly the URLs a policy's origins[].url takes.
ORIGINS = [
    ("http://127.0.0.1:8000", True, "address-and-port"),
    ("https://origin.example", True, "https-name"),
    ("HTTP://Origin.Example/", True, "upper-case-and-a-slash"),
    ("http://[::1]:8080", True, "ipv6"),
    ("http://bücher.example", True, "idn"),
    ("ftp://files.example", False, "not-http"),
    ("origin.example:8000", False, "no-scheme"),
    ("http://", False, "no-host"),
    ("http://127.0.0.1:8000/app", False, "path"),
    ("http://127.0.0.1:8000/?q=1", False, "query"),
    ("http://127.0.0.1:8000#top", False, "fragment"),
    ("http://user:secret@127.0.0.1:8000", False, "user-info"),
    ("http://127.0.0.1:99999", False, "port-out-of-range"),
    ("http://127.0.0.1:0", False, "port-0"),
    ("http://origin example", False, "space"),
    ("http://origin..example", False, "empty-label"),
]


def _policy_takes(url: str) -> bool:
    try:
        parse_policy({}, tenant="default", source="--origin", quick_origin=url)
    except PolicyError:
        return False
    return True


@pytest.mark.parametrize(("url", "accepted"), [o[:2] for o in ORIGINS], ids=[o[2] for o in ORIGINS])
def test_origin_flag_takes_what_a_policy_takes(url, accepted, capsys):
    assert _policy_takes(url) is accepted
    if accepted:
        assert build_parser().parse_args(["serve", "--origin", url]).origin == url
        return
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["serve", "--origin", url])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == ("edge serve: error: argument --origin: expected an absolute http:// or https:// URL with a host "
                   f"and no path, query or fragment, such as http://127.0.0.1:8000, found {url!r}")
