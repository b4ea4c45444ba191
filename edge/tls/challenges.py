"""HTTP-01 challenge answers (RFC 8555 §8.3), shared by a node's workers.

The process that runs the ACME orders writes each answer (the key
authorization) into a file named by its token before it tells the CA the
challenge is ready, and removes it when the authorization is decided. The
CA's validation request may reach any worker (SO_REUSEPORT), so every worker
reads the answer from that file. Writes go through a temporary file and a
rename: a worker reads the whole answer or none.

Tokens are base64url (RFC 8555 §8.1, at least 128 bits of entropy); any
other text in the path never reaches the file system.
"""
from __future__ import annotations

import contextlib
import re
from pathlib import Path

from edge.files import write_private

PREFIX = "/.well-known/acme-challenge/"
_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,128}")
MAX_ANSWER = 1024  # a key authorization is a token, ".", and a 43-character thumbprint


def token_of(path: str) -> str | None:
    """The token a challenge path names, or None when it names none that can exist."""
    token = path[len(PREFIX):]
    return token if _TOKEN.fullmatch(token) else None


class ChallengeFiles:
    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def put(self, token: str, key_authorization: str) -> None:
        if not _TOKEN.fullmatch(token):
            raise ValueError("not an ACME token")
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_private(self.directory / token, key_authorization.encode("ascii"))

    def remove(self, token: str) -> None:
        if _TOKEN.fullmatch(token):
            with contextlib.suppress(FileNotFoundError):
                (self.directory / token).unlink()

    def read(self, token: str) -> bytes | None:
        """The answer for ``token``; None when there is none (or it is not a token)."""
        if not _TOKEN.fullmatch(token):
            return None
        try:
            with open(self.directory / token, "rb") as f:
                return f.read(MAX_ANSWER)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
