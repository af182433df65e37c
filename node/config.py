"""Node configuration: one pydantic model, parsed once, validated with readable errors.

Sources, later ones winning: the TOML file (`--config`), environment variables
(SHARDFLEET_ACCESS_KEY, SHARDFLEET_SECRET_KEY), command-line flags.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from shardfleet.erasure import ErasureParams

if TYPE_CHECKING:
    from shardfleet.node.s3.cors import Rule

DEV_ACCESS_KEY = "shardfleet-dev"
DEV_SECRET_KEY = "shardfleet-dev-secret-key"
ENV_ACCESS_KEY = "SHARDFLEET_ACCESS_KEY"
ENV_SECRET_KEY = "SHARDFLEET_SECRET_KEY"
ENV_METRICS_TOKEN = "SHARDFLEET_METRICS_TOKEN"
METRICS_TOKEN_PATTERN = r"^[\x21-\x7e]+$"  # visible ASCII: what a header value carries as is


class ConfigError(Exception):
    """A configuration that cannot work; the message names the field."""


def _check_hostport(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("must be HOST:PORT, e.g. 127.0.0.1:9000")
    return value


class ClusterNode(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$")
    """Node name; also the name in its TLS certificate."""
    s3: str
    """HOST:PORT where this node serves S3 (what clients and the dev cluster print)."""
    rpc: str
    """HOST:PORT of its QUIC endpoint (drive RPC, heartbeats)."""
    drives: list[str] = Field(min_length=1)

    @field_validator("s3", "rpc")
    @classmethod
    def _hostport(cls, value: str) -> str:
        return _check_hostport(value)


class TlsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ca: Path
    """The cluster CA certificate (shardfleet certs init)."""
    cert: Path
    """This node's certificate; "{node}" in the path is replaced by the node id."""
    key: Path

    def for_node(self, node: str) -> TlsConfig:
        sub = {k: Path(str(v).replace("{node}", node)) for k, v in self.model_dump().items()}
        return TlsConfig(**sub)


class ClusterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64)
    nodes: list[ClusterNode] = Field(min_length=1)
    """The first pool: its drives are grouped into erasure sets once, at cluster init."""
    tls: TlsConfig
    seeds: list[str] = []  # pydantic copies a mutable default per instance (see NodeConfig.drives)
    """QUIC HOST:PORT of nodes to ask for the topology when this node is not in the first
    pool (a node of a pool added with `admin add-pool`); default: the first pool's nodes."""
    heartbeat_interval: float = Field(default=5.0, gt=0, le=300)
    offline_after: float = Field(default=30.0, gt=0, le=3600)
    max_datagram_size: int | None = Field(default=None, ge=1200, le=65527)
    """QUIC datagram size; default: the largest loopback allows. 1452 on a 1500-MTU LAN,
    8952 on a 9000-MTU (jumbo frame) LAN."""
    background_rate_mib: float = Field(default=32.0, ge=0, le=100_000)
    """MiB per second a node sends on background (heal, scan) RPCs; 0: no cap."""

    @model_validator(mode="after")
    def _unique(self) -> ClusterConfig:
        for what in ("id", "s3", "rpc"):
            values = [getattr(n, what) for n in self.nodes]
            if len(set(values)) != len(values):
                raise ValueError(f"two nodes share the same {what}")
        return self

    def node(self, node_id: str) -> ClusterNode:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise KeyError(node_id)


class UserConfig(BaseModel):
    """One [[users]] entry. The secret comes from exactly one of `secret_key`, `secret_env`
    (an environment variable's name) or `secret_file` (a file holding it, so the config
    file itself can be world-readable)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    access_key: str = Field(min_length=3, max_length=128, pattern=r"^[A-Za-z0-9._-]+$")
    secret_key: str | None = Field(default=None, min_length=8, max_length=128)
    secret_env: str | None = Field(default=None, min_length=1, max_length=256)
    secret_file: Path | None = None
    display_name: str | None = Field(default=None, min_length=1, max_length=128)
    canonical_id: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")

    @model_validator(mode="after")
    def _one_secret(self) -> UserConfig:
        given = [x for x in (self.secret_key, self.secret_env, self.secret_file) if x is not None]
        if len(given) != 1:
            raise ValueError(
                f"users: {self.access_key}: give exactly one of secret_key, secret_env, secret_file"
            )
        return self

    def secret(self, env: Mapping[str, str]) -> str:
        """The secret, read now (a SIGHUP reads files and the environment again)."""
        if self.secret_key is not None:
            return self.secret_key
        if self.secret_env is not None:
            value = env.get(self.secret_env)
            if not value:
                raise ConfigError(f"users: {self.access_key}: ${self.secret_env} is not set")
            return value
        assert self.secret_file is not None
        try:
            return self.secret_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(
                f"users: {self.access_key}: cannot read {self.secret_file}: {exc.strerror}"
            ) from exc


class CorsDefault(BaseModel):
    """`[cors_default]`: the CORS rule of every bucket that has none of its own (a bucket's
    PutBucketCors replaces it there). Unset: such buckets answer no cross-origin request,
    as in S3. Checked as S3 checks a bucket's rule (node/s3/cors.validate_rule)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    allowed_origins: list[str] = Field(min_length=1, max_length=100)
    allowed_methods: list[str] = Field(
        default=["GET", "PUT", "POST", "DELETE", "HEAD"], min_length=1
    )
    allowed_headers: list[str] = Field(default=["*"])
    expose_headers: list[str] = Field(default=["ETag", "x-amz-request-id", "x-amz-version-id"])
    max_age_seconds: int | None = Field(default=None, ge=0, le=2**31 - 1)

    @model_validator(mode="after")
    def _valid(self) -> CorsDefault:
        from shardfleet.node.s3.errors import S3Error

        try:
            self.rule()
        except S3Error as exc:
            raise ValueError(f"cors_default: {exc.message}") from None
        return self

    def rule(self) -> Rule:
        from shardfleet.node.s3.cors import Rule, validate_rule

        return validate_rule(
            Rule(
                allowed_methods=tuple(self.allowed_methods),
                allowed_origins=tuple(self.allowed_origins),
                allowed_headers=tuple(self.allowed_headers),
                expose_headers=tuple(self.expose_headers),
                max_age=self.max_age_seconds,
            )
        )


class NodeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    node: str | None = None
    """In a cluster: which [[cluster.nodes]] entry this process is."""
    cluster: ClusterConfig | None = None

    address: str = "127.0.0.1:9000"
    """host:port of the S3 endpoint (port 0 picks a free one and prints it)."""
    tls_cert: Path | None = None
    """PEM certificate chain (leaf first) of the S3 listener: with tls_key set too, it
    serves HTTPS only. Read again on SIGHUP (node/https.py)."""
    tls_key: Path | None = None
    """The unencrypted PEM private key of tls_cert."""
    tls_min_version: Literal["1.2", "1.3"] = "1.2"
    """Oldest TLS version the S3 listener accepts."""
    drives: list[Path] = []
    """Drive directories, in set order: each k+m consecutive drives form one erasure set."""
    # (a plain [] default, which pydantic copies per instance: for default_factory=list it
    # reads the signature of `list`, and the first such read compiles the tokenizer's
    # regular expressions, ~5 ms of start-up)
    ec: str = "2+2"
    """Erasure coding K+M: K data and M parity shards per stripe."""
    stripe_size: int = Field(default=1 << 20, ge=4096, le=64 << 20)
    """Object bytes per stripe (each shard block is stripe_size / K)."""
    write_quorum: int | None = None
    """Drives that must commit before a PUT is acknowledged (default K+1, capped at K+M)."""
    region: str = "us-east-1"
    access_key: str | None = Field(default=None, min_length=3, max_length=128)
    secret_key: str | None = Field(default=None, min_length=8, max_length=128)
    users: list[UserConfig] = []
    """More credentials ([[users]]), each its own owner of the buckets it creates; the root
    pair (access_key/secret_key) keeps every bucket and the admin API."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """info logs one line per S3 request (the access log); warning keeps only problems."""
    log_format: Literal["text", "json"] = "text"
    body_stall_timeout: float = Field(default=60.0, gt=0, le=3600)
    """Seconds a client may send nothing in the middle of a request body."""
    header_timeout: float = Field(default=10.0, gt=0, le=3600)
    """Seconds a client gets to send a complete request head (request line and headers):
    counted from when the connection opens, and on a kept-alive connection from the first
    byte of the next request. A connection that sends nothing, or half a head, is closed
    then. The body is not covered (body_stall_timeout is)."""
    keepalive_timeout: float = Field(default=30.0, gt=0, le=3600)
    """Seconds a kept-alive connection may sit idle between requests before it is closed
    (aiohttp's own default is an hour)."""
    max_idle_connections: int = Field(default=1024, ge=1, le=1_000_000)
    """Connections that may wait for a request head at once: new ones, ones halfway through
    sending a head, and kept-alive ones idle between requests. Past it, the connections
    that have waited longest are closed first (see node.s3.server.S3Server)."""
    bucket_sync_interval: float = Field(default=15.0, gt=0, le=3600)
    """Seconds between passes that give drives the buckets they missed while offline."""
    scan_interval: float = Field(default=86400.0, gt=0, le=365 * 86400.0)
    """Seconds between the scanner's passes over every set (healing/scanner.py)."""
    scan_deep_every: int = Field(default=7, ge=0, le=10_000)
    """Every Nth pass is deep (every block's CRC32C checked); 0: never by itself."""
    scan_rate: float = Field(default=200.0, ge=0, le=1_000_000)
    """Objects per second a scanner pass checks at most (0: no cap)."""
    tombstone_min_age: float = Field(default=600.0, ge=0, le=365 * 86400.0)
    """Seconds a DELETE's tombstone stays once every drive of its set holds it (a heal that
    read the old version before the delete has long finished by then); the scanner then
    collects it (healing/reconstruct.py)."""
    tombstone_ttl: float = Field(default=30 * 86400.0, gt=0, le=3650 * 86400.0)
    """Seconds after which a tombstone is collected even from a set where some drive has
    not got it (a drive offline that long comes back with a version too few drives hold:
    never served, and collected as dangling)."""
    dangling_age: float = Field(default=600.0, ge=0, le=365 * 86400.0)
    """Seconds before the scanner removes a record that too few drives hold to read and
    enough drives prove absent (a write that never reached quorum and whose undo was lost)."""
    mrf_capacity: int = Field(default=100_000, ge=1, le=10_000_000)
    """Objects the MRF queue (healing/mrf.py) holds; reports beyond it go to the scanner."""
    multipart_expiry: float = Field(default=7 * 86400.0, gt=0, le=3650 * 86400.0)
    """Seconds an unfinished multipart upload is kept; older ones are aborted, parts and
    all, by the upload sweep (healing/uploads.py)."""
    multipart_sweep_interval: float = Field(default=3600.0, gt=0, le=7 * 86400.0)
    """Seconds between upload sweeps."""
    multipart_tombstone_ttl: float = Field(default=86400.0, gt=0, le=3650 * 86400.0)
    """Seconds a completed upload is remembered (a repeated Complete is answered, drives
    that missed the completion get it)."""
    shutdown_grace: float = Field(default=30.0, ge=0, le=3600)
    """Seconds in-flight requests get to finish after SIGTERM."""
    metrics_token: str | None = Field(
        default=None, min_length=16, max_length=4096, pattern=METRICS_TOKEN_PATTERN
    )
    """When set, GET /metrics needs `Authorization: Bearer <token>` (401 otherwise); unset,
    /metrics is open. Also from $SHARDFLEET_METRICS_TOKEN, or metrics_token_file."""
    metrics_token_file: Path | None = None
    """A file holding metrics_token (read at start and on SIGHUP; surrounding whitespace
    ignored), so the configuration file itself need not hold the secret."""
    rate_limit_rps: float = Field(default=0.0, ge=0, le=1_000_000)
    """Requests per second each requester may make (an access key; an anonymous request's
    source address); beyond it 503 SlowDown with Retry-After. 0: no limit."""
    rate_limit_burst: int = Field(default=0, ge=0, le=10_000_000)
    """Requests a requester may make at once above rate_limit_rps (the token bucket's depth);
    0: one second's worth, rate_limit_rps."""
    rate_limit_uploads: int = Field(default=0, ge=0, le=1_000_000)
    """PutObject/UploadPart/CopyObject/UploadPartCopy requests each requester may have in
    flight at once; beyond it 503 SlowDown. 0: no limit."""
    rate_limit_hold: float = Field(default=0.5, ge=0, le=10)
    """Seconds a request refused by a rate limit waits before its 503 SlowDown goes out, so
    a client that retries at once without backoff cannot spend the node on refusals (at
    most 4096 held at once per node). 0: answered at once."""
    cors_default: CorsDefault | None = None
    """The CORS rule of buckets without their own ([cors_default]; see CorsDefault)."""
    _metrics_token_read: str | None = PrivateAttr(default=None)

    @field_validator("ec")
    @classmethod
    def _ec(cls, value: str) -> str:
        ErasureParams.parse(value)
        return value

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        return _check_hostport(value)

    @model_validator(mode="before")
    @classmethod
    def _from_cluster(cls, data: object) -> object:
        """In a cluster, the node's drives and S3 address come from its cluster entry."""
        if isinstance(data, dict) and data.get("cluster") and data.get("node"):
            cluster = ClusterConfig.model_validate(data["cluster"])
            data = {**data, "cluster": cluster}
            try:
                entry = cluster.node(str(data["node"]))
            except KeyError:
                return data  # a node of a later pool: its entry comes from the topology
            data.setdefault("drives", entry.drives)
            data.setdefault("address", entry.s3)
        return data

    @model_validator(mode="after")
    def _consistent(self) -> NodeConfig:
        params = self.params
        if (self.cluster is None) != (self.node is None):
            raise ValueError("node: a cluster node needs both the [cluster] section and --node")
        if not self.drives and not self.joining:
            raise ValueError("drives: none given (use --data DIR --drives N or --drive PATH)")
        if self.cluster is None and len(self.drives) % params.n:
            raise ValueError(
                f"drives: {len(self.drives)} drives do not divide into sets of {params.n} ({params})"
            )
        if len(set(self.drives)) != len(self.drives):
            raise ValueError("drives: the same drive path is listed twice")
        if self.write_quorum is not None:
            try:
                params.check_write_quorum(self.write_quorum)
            except ValueError as exc:
                raise ValueError(f"write_quorum: {exc}") from None
        if (self.access_key is None) != (self.secret_key is None):
            raise ValueError("access_key/secret_key: set both, or neither")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert/tls_key: set both (HTTPS), or neither (plain HTTP)")
        keys = [u.access_key for u in self.users]
        if len(set(keys)) != len(keys) or self.credentials[0] in keys:
            raise ValueError("users: an access key is listed twice (or is the root key)")
        if self.dev_credentials and not self.is_loopback:
            raise ValueError(
                f"access_key/secret_key: refusing to listen on {self.address} with the printed "
                "development credentials: "
                f"set {ENV_ACCESS_KEY} and {ENV_SECRET_KEY}"
            )
        if self.metrics_token_file is not None:
            if self.metrics_token is not None:
                raise ValueError("metrics_token/metrics_token_file: set one, not both")
            self._metrics_token_read = _read_metrics_token(self.metrics_token_file)
        return self

    @property
    def metrics_bearer(self) -> str | None:
        """The token GET /metrics needs (metrics_token or the file's), None: open."""
        return self.metrics_token if self.metrics_token is not None else self._metrics_token_read

    @property
    def joining(self) -> bool:
        """A cluster node that is not in the first pool: it learns its place from a seed."""
        return self.cluster is not None and self.node not in {n.id for n in self.cluster.nodes}

    @property
    def seeds(self) -> list[str]:
        assert self.cluster is not None
        return self.cluster.seeds or [n.rpc for n in self.cluster.nodes]

    @property
    def params(self) -> ErasureParams:
        return ErasureParams.parse(self.ec, self.stripe_size)

    @property
    def host(self) -> str:
        return self.address.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.address.rpartition(":")[2])

    @property
    def https(self) -> bool:
        """Whether the S3 listener serves HTTPS (cluster.tls is the QUIC transport's)."""
        return self.tls_cert is not None

    @property
    def dev_credentials(self) -> bool:
        return self.access_key is None

    @property
    def credentials(self) -> tuple[str, str]:
        if self.access_key is None or self.secret_key is None:
            return DEV_ACCESS_KEY, DEV_SECRET_KEY
        return self.access_key, self.secret_key

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def _read_metrics_token(path: Path) -> str:
    import re

    try:
        token = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(
            f"metrics_token_file: cannot read {path}: {getattr(exc, 'strerror', None) or exc}"
        ) from None
    if not 16 <= len(token) <= 4096 or not re.fullmatch(METRICS_TOKEN_PATTERN, token):
        raise ValueError(
            f"metrics_token_file: {path} must hold one token of 16 to 4096 visible ASCII "
            "characters (no spaces)"
        )
    return token


def describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"  {where}: {msg}" if where else f"  {msg}")
    return "invalid configuration:\n" + "\n".join(lines)


def load(
    file: Path | None, overrides: dict[str, object], env: dict[str, str] | None = None
) -> NodeConfig:
    """File, then environment, then flags (None values in overrides are ignored)."""
    env = os.environ if env is None else env
    data: dict[str, object] = {}
    if file is not None:
        import tomllib  # only with a config file (~3 ms of start-up)

        try:
            data = tomllib.loads(file.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read {file}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file}: not valid TOML: {exc}") from exc
    if env.get(ENV_ACCESS_KEY) or env.get(ENV_SECRET_KEY):
        data["access_key"] = env.get(ENV_ACCESS_KEY)
        data["secret_key"] = env.get(ENV_SECRET_KEY)
    if env.get(ENV_METRICS_TOKEN):  # the environment wins over the file's token or token file
        data["metrics_token"] = env[ENV_METRICS_TOKEN]
        data.pop("metrics_token_file", None)
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return NodeConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe(exc)) from exc
