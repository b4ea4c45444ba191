"""The ``filters.under_attack`` section: when to put a proof-of-work
challenge in front of a tenant. :mod:`edge.filters.under_attack` applies it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edge.schema.check import Check, int_in, join, number_in, one_of, request_path

MAX_EXCLUDE_PATHS = 100
DEFAULT_AUTO_RPS = 500.0
DEFAULT_AUTO_HOLD = 300
DEFAULT_DIFFICULTY = 16
DEFAULT_COOKIE_TTL = 3600
MIN_DIFFICULTY, MAX_DIFFICULTY = 8, 24
MIN_COOKIE_TTL, MAX_COOKIE_TTL = 60, 86_400
MAX_AUTO_RPS = 1_000_000.0
MAX_AUTO_HOLD = 86_400

KEYS = {"under_attack": ("mode", "auto_rps", "auto_hold", "difficulty", "cookie_ttl", "exclude_paths")}

MODE = '"off", "on" or "auto"'
AUTO_RPS = f"a number of requests per second > 0 and <= {MAX_AUTO_RPS:g}"
AUTO_HOLD = f"an integer number of seconds 0..{MAX_AUTO_HOLD}"
DIFFICULTY = f"an integer number of leading zero bits {MIN_DIFFICULTY}..{MAX_DIFFICULTY}"
COOKIE_TTL = f"an integer number of seconds {MIN_COOKIE_TTL}..{MAX_COOKIE_TTL}"
EXCLUDE_PATHS = f"a list of at most {MAX_EXCLUDE_PATHS} path prefixes"
PATH = 'a path starting with "/" (printable ASCII, no spaces)'


@dataclass(frozen=True, slots=True)
class UnderAttack:
    """The ``filters.under_attack`` section; the default does nothing."""

    mode: str = "off"  # "off" | "on" | "auto"
    auto_rps: float = DEFAULT_AUTO_RPS
    auto_hold: int = DEFAULT_AUTO_HOLD
    difficulty: int = DEFAULT_DIFFICULTY
    cookie_ttl: int = DEFAULT_COOKIE_TTL
    exclude_paths: tuple[str, ...] = ()
    active: bool = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "active", self.mode != "off")


NO_UNDER_ATTACK = UnderAttack()


def parse_under_attack(c: Check, o: dict[str, Any], path: str) -> UnderAttack:
    """``o`` is the section, its keys already checked against ``KEYS``; every
    bad value is reported on ``c``."""
    excludes: tuple[str, ...] = ()
    raw = o.get("exclude_paths")
    if isinstance(raw, list) and len(raw) > MAX_EXCLUDE_PATHS:
        c.fail(join(path, "exclude_paths"), EXCLUDE_PATHS, raw)
    else:
        excludes = c.list(o, path, "exclude_paths", (), EXCLUDE_PATHS, PATH, request_path)
    return UnderAttack(
        mode=c.get(o, path, "mode", "off", MODE, one_of("off", "on", "auto")),
        auto_rps=c.get(o, path, "auto_rps", DEFAULT_AUTO_RPS, AUTO_RPS, number_in(0, MAX_AUTO_RPS)),
        auto_hold=c.get(o, path, "auto_hold", DEFAULT_AUTO_HOLD, AUTO_HOLD, int_in(0, MAX_AUTO_HOLD)),
        difficulty=c.get(o, path, "difficulty", DEFAULT_DIFFICULTY, DIFFICULTY,
                         int_in(MIN_DIFFICULTY, MAX_DIFFICULTY)),
        cookie_ttl=c.get(o, path, "cookie_ttl", DEFAULT_COOKIE_TTL, COOKIE_TTL, int_in(MIN_COOKIE_TTL, MAX_COOKIE_TTL)),
        exclude_paths=excludes,
    )


def under_attack_data(u: UnderAttack) -> dict[str, Any]:
    """The section with every default spelled out (the effective policy)."""
    return {
        "mode": u.mode,
        "auto_rps": u.auto_rps,
        "auto_hold": u.auto_hold,
        "difficulty": u.difficulty,
        "cookie_ttl": u.cookie_ttl,
        "exclude_paths": list(u.exclude_paths),
    }
