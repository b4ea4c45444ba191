"""One order at an ACME CA (RFC 8555), through the ``acme`` library that
certbot is built on. Synchronous and blocking: :mod:`edge.tls.acme` runs it
in a thread, one order at a time, never on the event loop.

An order's URL and its certificate key are written to ``orders/<name>.json``
(mode 0600) as soon as the CA made the order, and removed once its
certificate is stored: a node that stops half-way resumes the same order
(its authorizations may already be valid) instead of placing another,
which counts against the CA's rate limits.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import josepy as jose
import requests
from acme import challenges, client, crypto_util, errors, messages
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from edge.tls.challenges import ChallengeFiles
from edge.files import write_private

log = logging.getLogger("edge.acme")

USER_AGENT = "edge-acme/1"
_POLL_WAIT = (0.5, 10.0)  # bounds of the wait between two polls of an authorization, whatever Retry-After says
_MAX_ERROR = 400  # characters of a CA's problem detail kept for logs and events


class OrderFailed(Exception):
    """An order that did not give a certificate. ``retry_after``: seconds the
    CA asked to wait (Retry-After of its last error answer), if it did."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message[:_MAX_ERROR])
        self.retry_after = retry_after


class Stopped(Exception):
    """The node is stopping: the order is left as it is, to be resumed."""


@dataclass(frozen=True, slots=True)
class Issued:
    chain_pem: bytes  # leaf first, as the CA sent it
    key_pem: bytes  # PKCS#8, unencrypted


class AcmeClient:
    """An account at one CA (made on first use) and the orders placed with it."""

    def __init__(self, directory_url: str, account_key: Path, *, email: str | None, ca_bundle: Path | None,
                 request_timeout: float, order_timeout: float, challenges_dir: ChallengeFiles, orders_dir: Path,
                 stop: threading.Event) -> None:
        self.directory_url = directory_url
        self.account_key = account_key
        self.email = email
        self.ca_bundle = ca_bundle
        self.request_timeout = request_timeout
        self.order_timeout = order_timeout
        self.challenges = challenges_dir
        self.orders_dir = orders_dir
        self.stop = stop
        self._client: client.ClientV2 | None = None
        self._retry_after: str | None = None

    # ------------------------------------------------------------ the account

    def _connect(self) -> client.ClientV2:
        if self._client is not None:
            return self._client
        key = load_or_create_key(self.account_key)
        jwk, alg = _jwk(key)
        net = client.ClientNetwork(jwk, alg=alg, verify_ssl=str(self.ca_bundle) if self.ca_bundle else True,
                                   user_agent=USER_AGENT, timeout=self.request_timeout)
        net.session.trust_env = False  # exactly the configured CA, no proxy from the environment
        net.session.hooks["response"].append(self._note)
        acme = client.ClientV2(client.ClientV2.get_directory(self.directory_url, net), net)
        registration = messages.NewRegistration.from_data(email=self.email, terms_of_service_agreed=True)
        try:
            account = acme.new_account(registration)
            log.info("ACME account registered at %s", self.directory_url)
        except errors.ConflictError as exists:
            # The key already has an account: this is its URL (RFC 8555 §7.3.1).
            account = messages.RegistrationResource(uri=exists.location, body=messages.Registration())
        net.account = account
        self._client = acme
        return acme

    def _note(self, response: requests.Response, *args, **kwargs) -> None:
        if response.status_code >= 400:
            self._retry_after = response.headers.get("Retry-After")

    # ------------------------------------------------------------- an order

    def issue(self, name: str, hosts: tuple[str, ...]) -> Issued:
        """A certificate for ``hosts``, or OrderFailed / Stopped."""
        self._retry_after = None
        try:
            return self._issue(name, hosts)
        except (OrderFailed, Stopped):
            raise
        except messages.Error as exc:
            raise OrderFailed(_problem(exc), self._retry_seconds()) from None
        except errors.TimeoutError:
            raise OrderFailed(f"not done within acme.order_timeout ({self.order_timeout:g} s)") from None
        except requests.RequestException as exc:
            self._client = None  # connect again next time (the CA may have moved or restarted)
            raise OrderFailed(f"cannot reach the CA: {_short(exc)}") from None
        except (errors.Error, jose.errors.Error, ValueError, KeyError) as exc:
            self._client = None
            raise OrderFailed(f"unexpected answer from the CA: {_short(exc)}") from None

    def _issue(self, name: str, hosts: tuple[str, ...]) -> Issued:
        acme = self._connect()
        deadline = dt.datetime.now() + dt.timedelta(seconds=self.order_timeout)
        order, key_pem = self._resume(acme, name, hosts) or self._new_order(acme, name, hosts)
        status = order.body.status
        if status == messages.STATUS_INVALID:
            self.forget(name)
            raise OrderFailed(_problem(order.body.error) if order.body.error else "the CA refused the order")
        try:
            if status == messages.STATUS_PENDING:
                self._authorize(acme, order, deadline)
            if status in (messages.STATUS_PENDING, messages.STATUS_READY):
                order = acme.finalize_order(order, deadline)
            else:  # processing or valid: issued, or about to be
                order = acme.poll_finalization(order, deadline)
        except Stopped:
            raise  # the CA may be validating still: the answers stay for whoever resumes the order
        except BaseException:
            self._clean(order)
            raise
        self._clean(order)
        return Issued(order.fullchain_pem.encode("ascii"), key_pem)

    def _clean(self, order) -> None:
        """Remove the challenge answers of ``order``: its authorizations are decided."""
        for authz in order.authorizations:
            for challenge in authz.body.challenges:
                if isinstance(challenge.chall, challenges.HTTP01):
                    self.challenges.remove(challenge.chall.encode("token"))

    def _new_order(self, acme: client.ClientV2, name: str, hosts: tuple[str, ...]):
        key = ec.generate_private_key(ec.SECP256R1())
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        order = acme.new_order(crypto_util.make_csr(key_pem, list(hosts)))
        _write_private(self.orders_dir / f"{name}.json", json.dumps(
            {"url": order.uri, "hosts": list(hosts), "key": key_pem.decode("ascii"),
             "csr": order.csr_pem.decode("ascii")}).encode())
        log.info("ACME order placed for %s", ", ".join(hosts))
        return order, key_pem

    def _resume(self, acme: client.ClientV2, name: str, hosts: tuple[str, ...]):
        """The order placed earlier for these hosts, when the CA still has it."""
        path = self.orders_dir / f"{name}.json"
        try:
            saved = json.loads(path.read_bytes())
            url, key_pem, csr_pem = saved["url"], saved["key"].encode("ascii"), saved["csr"].encode("ascii")
            if tuple(saved["hosts"]) != hosts or not isinstance(url, str):
                raise ValueError("for other hosts")
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            self.forget(name)
            return None
        try:
            body = messages.Order.from_json(self._get(acme, url).json())
            authorizations = [messages.AuthorizationResource(
                body=messages.Authorization.from_json(self._get(acme, a).json()), uri=a)
                for a in body.authorizations]
        except (messages.Error, jose.errors.Error, ValueError):
            self.forget(name)  # gone at the CA (expired, or another CA): a new order
            return None
        if body.status == messages.STATUS_INVALID:
            self.forget(name)
            return None
        log.info("ACME order for %s resumed (%s)", ", ".join(hosts), body.status)
        order = messages.OrderResource(body=body, uri=url, authorizations=authorizations, csr_pem=csr_pem)
        return order, key_pem

    def _authorize(self, acme: client.ClientV2, order, deadline: dt.datetime) -> None:
        pending = []
        for authz in order.authorizations:
            if authz.body.status == messages.STATUS_VALID:
                continue
            if authz.body.status != messages.STATUS_PENDING:
                raise OrderFailed(f"{authz.body.identifier.value}: authorization {authz.body.status}")
            challenge = next((c for c in authz.body.challenges if isinstance(c.chall, challenges.HTTP01)), None)
            if challenge is None:
                raise OrderFailed(f"{authz.body.identifier.value}: the CA offers no HTTP-01 challenge")
            response, answer = challenge.response_and_validation(acme.net.key)
            # Readable by every worker before the CA is told to look.
            self.challenges.put(challenge.chall.encode("token"), answer)
            if challenge.status == messages.STATUS_PENDING:
                acme.answer_challenge(challenge, response)
            pending.append(authz)
        for authz in pending:
            self._wait_valid(acme, authz, deadline)

    def _wait_valid(self, acme: client.ClientV2, authz, deadline: dt.datetime) -> None:
        while True:
            authz, response = acme.poll(authz)
            status = authz.body.status
            if status == messages.STATUS_VALID:
                return
            if status != messages.STATUS_PENDING:
                problems = [_problem(c.error) for c in authz.body.challenges if c.error is not None]
                raise OrderFailed(f"{authz.body.identifier.value}: " + ("; ".join(problems) or f"authorization {status}"))
            wait = (client.ClientV2.retry_after(response, 1) - dt.datetime.now()).total_seconds()
            wait = min(max(wait, _POLL_WAIT[0]), _POLL_WAIT[1], (deadline - dt.datetime.now()).total_seconds())
            if wait <= 0:
                raise errors.TimeoutError()
            if self.stop.wait(wait):
                raise Stopped()

    def _get(self, acme: client.ClientV2, url: str) -> requests.Response:
        """POST-as-GET (RFC 8555 §6.3)."""
        return acme.net.post(url, None, new_nonce_url=acme.directory["newNonce"])

    def saved_orders(self) -> list[str]:
        """The names of the orders in progress."""
        if not self.orders_dir.is_dir():
            return []
        return [p.stem for p in self.orders_dir.iterdir() if p.suffix == ".json" and not p.name.startswith(".")]

    def forget(self, name: str) -> None:
        """Drop the saved order of ``name``: its certificate is stored, or the order is dead."""
        with contextlib.suppress(FileNotFoundError):
            (self.orders_dir / f"{name}.json").unlink()

    def _retry_seconds(self) -> float | None:
        value = self._retry_after
        if value is None:
            return None
        response = requests.Response()
        response.headers["Retry-After"] = value
        return max(0.0, (client.ClientV2.retry_after(response, 0) - dt.datetime.now()).total_seconds())


# --- keys ---------------------------------------------------------------------


def load_or_create_key(path: Path):
    """The account key at ``path`` (PEM: EC P-256/P-384 or RSA); made (EC
    P-256, mode 0600) when the file does not exist."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        _write_private(path, pem, exclusive=True)
        log.info("ACME account key made at %s", path)
        return key
    if path.stat().st_mode & 0o077:
        log.warning("ACME account key %s can be read by other users than its owner (chmod 600 it)", path)
    try:
        return serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise OrderFailed(f"the account key {path} cannot be used: {_short(exc)}") from None


def _jwk(key) -> tuple[jose.JWK, jose.JWASignature]:
    if isinstance(key, rsa.RSAPrivateKey):
        return jose.JWKRSA(key=key), jose.RS256
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name in ("secp256r1", "secp384r1"):
        return jose.JWKEC(key=key), jose.ES256 if key.curve.name == "secp256r1" else jose.ES384
    raise OrderFailed("the account key must be RSA or ECDSA P-256/P-384")


def _write_private(path: Path, data: bytes, *, exclusive: bool = False) -> None:
    """``data`` into ``path`` atomically, mode 0600 from the first byte on
    (``exclusive``: fails when another process made the file meanwhile)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_private(path, data, exclusive=exclusive)


# --- messages -------------------------------------------------------------------


def _problem(error: messages.Error) -> str:
    code = error.code or str(error.typ)
    return f"{code}: {error.detail or error.title or error.description or 'no detail'}"


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]
