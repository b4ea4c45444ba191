"""Compression of cached text bodies: ratio and speed per coding and level.

Compares the settings edge.cache.compress could use for a compressed
variant (brotli quality 4, 5, 6, 11 and gzip level 6, each compressing the
whole body at once) with what the edge runs: its streaming encoder
(``edge.cache.compress.Encoder``) fed the body in the disk tier's 256 KiB
chunks. The bodies are generated to look like what a site serves: an HTML
page, a JavaScript bundle and a JSON API answer. Nothing is downloaded; the
bodies come from a seeded generator, so every run compresses the same bytes.

    python benchmarks/compress.py                       # HTML 30 KiB, JS 150 KiB, JSON 20 KiB
    python benchmarks/compress.py --body js:100 --body html:100   # other kinds and sizes (KiB)
    python benchmarks/compress.py --min-time 1.0        # longer timing per cell (less noise)

Prints a Markdown table: input size, output size, ratio (input / output),
MB/s of input compressed and µs per MB of input (one core, in-process,
best of ``--repeat`` timing loops of at least ``--min-time`` seconds). The
edge's own rows are marked.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import random
import sys
import time
import zlib

import brotli

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from edge.cache import compress as edge_compress

# Syllables of German-looking words: text with a realistic letter mix.
_SYLLABLES = (
    "ka", "ri", "to", "me", "na", "sa", "lo", "pe", "vi", "du", "ra", "en", "an", "ter", "ung",
    "ver", "ge", "be", "sch", "ein", "al", "le", "mo", "li", "ta", "ne", "ko", "ru", "si", "de",
    "fa", "ho", "ju", "pa", "ze", "wi", "bu", "ga", "ni", "ro", "se", "ti", "ma", "ke",
)


def _vocabulary(rng: random.Random, n: int) -> list[str]:
    words = set()
    while len(words) < n:
        words.add("".join(rng.choice(_SYLLABLES) for _ in range(rng.choice((1, 2, 2, 3, 3, 4)))))
    return sorted(words)


class _Words:
    """Words with a Zipf-like frequency, as in natural text."""

    def __init__(self, rng: random.Random, n: int = 3000) -> None:
        self.rng = rng
        self.words = _vocabulary(rng, n)
        self.weights = [1.0 / (i + 1) for i in range(n)]

    def take(self, k: int) -> list[str]:
        return self.rng.choices(self.words, self.weights, k=k)

    def sentence(self) -> str:
        words = self.take(self.rng.randint(6, 18))
        return " ".join(words).capitalize() + self.rng.choice(".....?!")

    def ident(self) -> str:
        parts = self.take(self.rng.randint(1, 3))
        return parts[0] + "".join(p.capitalize() for p in parts[1:])


def html_body(size: int, seed: int = 1) -> bytes:
    rng = random.Random(seed)
    w = _Words(rng)
    classes = [w.ident().lower() for _ in range(40)]
    out = [
        (
            "<!DOCTYPE html>\n<html lang=\"de\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{w.sentence()}</title>\n"
            "<link rel=\"stylesheet\" href=\"/static/css/main.4f9a2c1e.css\">\n"
            "<script defer src=\"/static/js/app.81c3d0aa.js\"></script>\n</head>\n<body>\n"
            "<header class=\"site-header\"><nav class=\"main-nav\"><ul>\n"
        )
    ]
    for _ in range(12):
        slug = "-".join(w.take(2))
        out.append(f"  <li class=\"nav-item\"><a class=\"nav-link\" href=\"/{slug}/\">{' '.join(w.take(2)).title()}</a></li>\n")
    out.append("</ul></nav></header>\n<main id=\"content\">\n")
    n = 0
    while sum(map(len, out)) < size - 200:
        n += 1
        cls = rng.choice(classes)
        out.append(f"<article class=\"card {cls}\" data-id=\"{rng.randint(1000, 99999)}\">\n")
        out.append(f"  <h2 class=\"card-title\"><a href=\"/artikel/{n}-{'-'.join(w.take(3))}\">{w.sentence()}</a></h2>\n")
        out.append(f"  <img class=\"card-image\" src=\"/media/{rng.getrandbits(48):012x}.jpg\" alt=\"{' '.join(w.take(3))}\" loading=\"lazy\" width=\"640\" height=\"360\">\n")
        for _ in range(rng.randint(1, 3)):
            out.append(f"  <p class=\"card-text\">{' '.join(w.sentence() for _ in range(rng.randint(2, 5)))}</p>\n")
        out.append(f"  <div class=\"card-meta\"><span class=\"date\">{rng.randint(1, 28):02d}.{rng.randint(1, 12):02d}.2024</span> <span class=\"author\">{w.ident().title()}</span></div>\n</article>\n")
    out.append("</main>\n<footer class=\"site-footer\"><p>&copy; 2024</p></footer>\n</body>\n</html>\n")
    return "".join(out).encode()[:size]


def js_body(size: int, seed: int = 2) -> bytes:
    rng = random.Random(seed)
    w = _Words(rng, 1500)
    idents = [w.ident() for _ in range(400)]
    out = ["\"use strict\";\n(function (global) {\n"]
    while sum(map(len, out)) < size - 100:
        name = rng.choice(idents)
        args = ", ".join(rng.sample(idents, rng.randint(0, 3)))
        out.append(f"  function {name}({args}) {{\n")
        for _ in range(rng.randint(2, 9)):
            a, b, c = rng.sample(idents, 3)
            kind = rng.random()
            if kind < 0.25:
                out.append(f"    var {a} = {b}.{c}({rng.randint(0, 255)}, \"{' '.join(w.take(rng.randint(1, 4)))}\");\n")
            elif kind < 0.45:
                out.append(f"    if ({a} && {a}.length > {rng.randint(0, 64)}) {{\n      return {b}.{c}({a});\n    }}\n")
            elif kind < 0.6:
                out.append(f"    for (var i = 0; i < {a}.length; i++) {{\n      {b}[i] = {c}({a}[i], i);\n    }}\n")
            elif kind < 0.75:
                out.append(f"    this.{a} = typeof {b} === \"undefined\" ? null : {b};\n")
            elif kind < 0.9:
                out.append(f"    {a}.addEventListener(\"{rng.choice(('click', 'load', 'resize', 'scroll', 'keydown'))}\", function (e) {{ {b}(e, {c}); }});\n")
            else:
                out.append(f"    throw new Error(\"{w.sentence()}\");\n")
        out.append(f"    return {rng.choice(idents)};\n  }}\n  global.{name} = {name};\n")
    out.append("})(typeof window !== \"undefined\" ? window : this);\n")
    return "".join(out).encode()[:size]


def json_body(size: int, seed: int = 3) -> bytes:
    rng = random.Random(seed)
    w = _Words(rng, 2000)
    items = []
    text = "[]"
    while len(text) < size:
        items.append(
            {
                "id": rng.randint(1, 10**7),
                "sku": f"{rng.choice('ABCDEFGH')}{rng.randint(10000, 99999)}",
                "name": " ".join(w.take(3)).title(),
                "description": w.sentence(),
                "price": {"amount": round(rng.uniform(1, 500), 2), "currency": "EUR"},
                "tags": w.take(rng.randint(1, 4)),
                "in_stock": rng.random() < 0.8,
                "rating": round(rng.uniform(1, 5), 1),
                "updated_at": f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00Z",
                "image": f"https://cdn.example.de/p/{rng.getrandbits(64):016x}.webp",
            }
        )
        text = json.dumps({"page": 1, "per_page": len(items), "items": items}, indent=1)
    return text.encode()[:size]


_KINDS = {"html": html_body, "js": js_body, "json": json_body}


_CHUNK = 256 * 1024  # the disk tier's read size (edge.cache.disk.CHUNK)


def _streamed(coding: str):
    def run(body: bytes) -> bytes:
        encoder = edge_compress.Encoder(coding)
        view = memoryview(body)
        out = [encoder.feed(view[i : i + _CHUNK]) for i in range(0, len(view), _CHUNK)]
        out.append(encoder.finish())
        return b"".join(out)

    return run


def _codecs() -> list[tuple[str, object]]:
    return [
        ("brotli q4", lambda b: brotli.compress(b, quality=4)),
        ("brotli q5", lambda b: brotli.compress(b, quality=5)),
        ("brotli q6", lambda b: brotli.compress(b, quality=6)),
        ("brotli q11", lambda b: brotli.compress(b, quality=11)),
        ("gzip 6", lambda b: gzip.compress(b, compresslevel=6, mtime=0)),
        (f"brotli q{edge_compress.BROTLI_QUALITY} streamed", _streamed("br")),
        (f"gzip {edge_compress.GZIP_LEVEL} streamed", _streamed("gzip")),
    ]


def _time(fn, body: bytes, min_time: float, repeat: int) -> float:
    """Best seconds per call over ``repeat`` loops of at least ``min_time``."""
    best = float("inf")
    for _ in range(repeat):
        n = 0
        t0 = time.perf_counter()
        while True:
            fn(body)
            n += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= min_time:
                break
        best = min(best, elapsed / n)
    return best


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--body", action="append", metavar="KIND:KIB", help="html, js or json and a size in KiB (repeatable)")
    p.add_argument("--min-time", type=float, default=0.2, help="seconds per timing loop (default 0.2)")
    p.add_argument("--repeat", type=int, default=3, help="timing loops per cell, the best is shown (default 3)")
    args = p.parse_args(argv)
    specs = args.body or ["html:30", "js:150", "json:20"]
    bodies = []
    for spec in specs:
        kind, _, kib = spec.partition(":")
        if kind not in _KINDS or not kib.isascii() or not kib.isdigit() or int(kib) < 1:
            p.error(f"--body {spec!r}: expected html|js|json:KIB, e.g. js:100")
        bodies.append((f"{kind.upper()} {kib} KiB", _KINDS[kind](int(kib) * 1024)))

    print(
        f"{_cpu()}, {os.cpu_count()} cores; Python {platform.python_version()}; "
        f"brotli {brotli.__version__}; zlib {zlib.ZLIB_RUNTIME_VERSION}; "
        f"min-time {args.min_time}s x {args.repeat}\n"
    )
    print("| body | coding | in bytes | out bytes | ratio | MB/s | µs/MB |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for label, body in bodies:
        for name, fn in _codecs():
            out = fn(body)
            seconds = _time(fn, body, args.min_time, args.repeat)
            mbps = len(body) / seconds / 1e6
            mark = " (edge)" if name.endswith("streamed") else ""
            print(
                f"| {label} | {name}{mark} | {len(body):,} | {len(out):,} | {len(body) / len(out):.2f} "
                f"| {mbps:.1f} | {1e6 / mbps:,.0f} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
