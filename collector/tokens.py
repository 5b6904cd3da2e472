"""API tokens: ``glt_<token_id>_<secret>``, stored as a salted PBKDF2 hash of the secret.

The token id is public (it names the token in listings, logs and error messages); the
secret is 256 random bits, shown once at creation and never stored. A lookup is by id,
then a constant-time comparison of the hash. The secrets are high-entropy, so a fast KDF
is enough: the iteration count only has to make a stolen table useless, not slow down a
dictionary attack on a human password.

Verified tokens (and rejected ones) are cached in-process for ``CACHE_TTL_S``, keyed by
the SHA-256 of the whole token, so ingest does not run the KDF per request. A revocation
drops the token from this process's cache at once; every other server process reads the
list of revoked token ids at most ``REVOCATION_CHECK_S`` after its last look (one small
query per process, whatever the load) and drops them: a revoked token stops working
everywhere within ``REVOCATION_CHECK_S``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine, select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field

from collector.models import TableModel

PREFIX = "glt_"
KINDS = ("node", "reader", "admin")
PBKDF2_ITERATIONS = 10_000
CACHE_TTL_S = 60.0
REVOCATION_CHECK_S = 5.0
CACHE_MAX_ENTRIES = 4096

_NODE_RE = re.compile(r"^[\x21-\x7e]{1,128}$")  # what an agent may send as its batch's `node`
_TOKEN_ID_RE = re.compile(r"^[0-9a-f]{1,32}$")
_MAX_TOKEN_LEN = 256


class ApiToken(TableModel, table=True):
    __tablename__ = "api_tokens"
    token_id: str = Field(primary_key=True, max_length=32)
    kind: str = Field(max_length=16)  # node | reader | admin
    node: str | None = Field(default=None, max_length=128)  # node tokens: the node they may ingest for
    account: str | None = Field(default=None, max_length=256)  # reader tokens: the only account they see
    secret_hash: str = Field(max_length=256)  # pbkdf2_sha256$iterations$salt_hex$hash_hex
    created_at_s: float
    revoked_at_s: float | None = None


tokens_t = ApiToken.__table__


@dataclass(frozen=True)
class TokenInfo:
    token_id: str
    kind: str
    node: str | None
    account: str | None


@dataclass(frozen=True)
class TokenRecord:
    """A stored token as listings show it: never the secret, nor its hash."""

    token_id: str
    kind: str
    node: str | None
    account: str | None
    created_at_s: float
    revoked_at_s: float | None


# -- hashing ---------------------------------------------------------------------------------

def hash_secret(secret: str, iterations: int = PBKDF2_ITERATIONS) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", secret.encode(), salt, iterations)
    return f"pbkdf2_sha256${iterations}${salt.hex()}${digest.hex()}"


def check_secret(secret: str, stored: str) -> bool:
    """Whether ``secret`` matches ``stored``; a malformed stored hash matches nothing."""
    try:
        algorithm, iterations, salt_hex, hash_hex = stored.split("$")
        if algorithm != "pbkdf2_sha256":
            return False
        salt, expected, rounds = bytes.fromhex(salt_hex), bytes.fromhex(hash_hex), int(iterations)
    except ValueError:
        return False
    if not 1 <= rounds <= 10_000_000:
        return False
    return hmac.compare_digest(hashlib.pbkdf2_hmac("sha256", secret.encode(), salt, rounds), expected)


def parse(token: str) -> tuple[str, str] | None:
    """``(token_id, secret)`` of a well-formed token string, else None."""
    if not isinstance(token, str) or len(token) > _MAX_TOKEN_LEN or not token.startswith(PREFIX):
        return None
    token_id, sep, secret = token[len(PREFIX):].partition("_")
    if not sep or not secret or not _TOKEN_ID_RE.match(token_id):
        return None
    return token_id, secret


# -- the in-process cache --------------------------------------------------------------------

class TokenCache:
    """Bounded TTL cache: SHA-256 of the full token -> TokenInfo, or None for a rejected token."""

    def __init__(self, ttl_s: float = CACHE_TTL_S, max_entries: int = CACHE_MAX_ENTRIES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s, self.max_entries, self.clock = ttl_s, max_entries, clock
        self._entries: OrderedDict[tuple[str, bytes], tuple[float, str, TokenInfo | None]] = OrderedDict()
        self._checked: dict[str, float] = {}  # database -> when its revocations were last read
        self._lock = threading.Lock()

    def get(self, key: tuple[str, bytes]) -> tuple[bool, TokenInfo | None]:
        """``(hit, info)``."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return False, None
            if entry[0] <= self.clock():
                del self._entries[key]
                return False, None
            return True, entry[2]

    def put(self, key: tuple[str, bytes], token_id: str, info: TokenInfo | None) -> None:
        with self._lock:
            now = self.clock()
            if key not in self._entries and len(self._entries) >= self.max_entries:
                for stale in [k for k, (expires, _, _) in self._entries.items() if expires <= now]:
                    del self._entries[stale]
                while len(self._entries) >= self.max_entries:
                    self._entries.popitem(last=False)  # the oldest
            self._entries[key] = (now + self.ttl_s, token_id, info)
            self._entries.move_to_end(key)

    def drop(self, *token_ids: str) -> None:
        ids = set(token_ids)
        with self._lock:
            for key in [k for k, (_, tid, _) in self._entries.items() if tid in ids]:
                del self._entries[key]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._checked.clear()

    def due_for_revocations(self, db: str, every_s: float = REVOCATION_CHECK_S) -> bool:
        """True (and the clock restarted) when ``db``'s revocations were last read ``every_s`` ago or more."""
        with self._lock:
            now = self.clock()
            if now - self._checked.get(db, float("-inf")) < every_s:
                return False
            self._checked[db] = now
            return True

    def __len__(self) -> int:
        return len(self._entries)


cache = TokenCache()


def _cache_key(engine: Engine, token: str) -> tuple[str, bytes]:
    # Keyed per database too, so one process serving two databases never mixes their tokens.
    return str(engine.url), hashlib.sha256(token.encode()).digest()


# -- operations ------------------------------------------------------------------------------

def _validate(kind: str, node: str | None, account: str | None) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind = {kind!r}: expected node, reader or admin")
    if kind == "node":
        if node is None:
            raise ValueError("node = None: a node token needs the node's name, as its agent sends it in `node`")
        if not _NODE_RE.match(node):
            raise ValueError(f"node = {node!r}: expected 1 to 128 printable ASCII characters, no spaces")
    elif node is not None:
        raise ValueError(f"node = {node!r}: only a node token names a node, not a {kind} token")
    if account is not None:
        if kind != "reader":
            raise ValueError(f"account = {account!r}: only a reader token can be scoped to an account, not a {kind} token")
        if not 1 <= len(account) <= 256:
            raise ValueError(f"account = {account!r}: expected 1 to 256 characters")


def create_token(engine: Engine, kind: str, node: str | None = None, account: str | None = None,
                 now: float | None = None) -> str:
    """Store a new token and return it, whole, this once: only its hash is kept."""
    _validate(kind, node, account)
    created_at_s = time.time() if now is None else now
    for attempt in range(3):
        token_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        try:
            with engine.begin() as conn:
                conn.execute(tokens_t.insert().values(
                    token_id=token_id, kind=kind, node=node, account=account,
                    secret_hash=hash_secret(secret), created_at_s=created_at_s, revoked_at_s=None,
                ))
        except IntegrityError:  # a 48-bit id collided: draw another
            if attempt == 2:
                raise
            continue
        return f"{PREFIX}{token_id}_{secret}"
    raise AssertionError("unreachable")


def cached(engine: Engine, token: str) -> tuple[bool, TokenInfo | None]:
    """``verify`` from this process's cache alone, without the database: ``(hit, info)``."""
    if parse(token) is None:
        return True, None
    return cache.get(_cache_key(engine, token))


def verify(engine: Engine, token: str) -> TokenInfo | None:
    """The token's identity if it is well-formed, known, unrevoked and its secret matches."""
    parsed = parse(token)
    if parsed is None:
        return None
    token_id, secret = parsed
    key = _cache_key(engine, token)
    _drop_revoked(engine)
    hit, info = cache.get(key)
    if hit:
        return info
    with engine.connect() as conn:
        row = conn.execute(select(tokens_t).where(tokens_t.c.token_id == token_id)).first()
    info = None
    if row is not None and check_secret(secret, row.secret_hash) and row.revoked_at_s is None:
        info = TokenInfo(token_id=row.token_id, kind=row.kind, node=row.node, account=row.account)
    cache.put(key, token_id, info)
    return info


def _drop_revoked(engine: Engine) -> None:
    """Every REVOCATION_CHECK_S: forget the cached tokens revoked since (by any process)."""
    if not cache.due_for_revocations(str(engine.url)):
        return
    with engine.connect() as conn:
        revoked = conn.execute(select(tokens_t.c.token_id).where(tokens_t.c.revoked_at_s.is_not(None))).scalars().all()
    cache.drop(*revoked)


def revoke(engine: Engine, token_id: str, now: float | None = None) -> bool:
    """Revoke an active token; False when no active token has that id."""
    with engine.begin() as conn:
        result = conn.execute(
            update(tokens_t).where(tokens_t.c.token_id == token_id, tokens_t.c.revoked_at_s.is_(None))
            .values(revoked_at_s=time.time() if now is None else now)
        )
    cache.drop(token_id)
    return result.rowcount > 0


def list_tokens(engine: Engine, include_revoked: bool = True) -> list[TokenRecord]:
    query = select(tokens_t.c.token_id, tokens_t.c.kind, tokens_t.c.node, tokens_t.c.account,
                   tokens_t.c.created_at_s, tokens_t.c.revoked_at_s).order_by(tokens_t.c.created_at_s, tokens_t.c.token_id)
    if not include_revoked:
        query = query.where(tokens_t.c.revoked_at_s.is_(None))
    with engine.connect() as conn:
        return [TokenRecord(*row) for row in conn.execute(query)]
