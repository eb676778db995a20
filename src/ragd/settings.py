"""Settings: pydantic-settings, env prefix ``RAGD_``, optional TOML file.

Settings are built by :func:`load_settings`, never at import time. Precedence, highest first:
explicit keyword overrides (the CLI's flags), environment variables, the TOML file
(``--config`` or ``RAGD_CONFIG``), defaults. Nested groups use ``__`` in environment
variables, e.g. ``RAGD_AUTH__ACCESS_TOKEN_TTL_SECONDS=600``.
"""

from __future__ import annotations

import contextvars
import logging
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from ragd.errors import ConfigurationError

logger = logging.getLogger(__name__)

#: Values people paste from tutorials. A secret equal to one of these (case-insensitive),
#: or made of a single repeated character, is refused in production.
PLACEHOLDER_SECRETS = frozenset(
    {
        "changethis",
        "changeme",
        "change-me",
        "change_me",
        "secret",
        "your-secret",
        "your-secret-key",
        "your_secret_key",
        "supersecret",
        "super-secret",
        "jwt-secret",
        "jwt_secret",
        "please-change-me",
        "replace-me",
        "development",
        "password",
        "test",
        "xxx",
    }
)
MIN_SECRET_BYTES = 32
DEV_SECRET_FILE = "jwt-secret"  # noqa: S105 - a file name

_toml_file: contextvars.ContextVar[Path | None] = contextvars.ContextVar(
    "ragd_settings_toml", default=None
)


class DatabaseSettings(BaseModel):
    """Where the source-of-truth database lives."""

    url: str | None = Field(
        default=None,
        description="SQLAlchemy async URL; default: sqlite+aiosqlite in the data dir.",
    )
    busy_timeout_ms: int = Field(default=5000, ge=0, le=600_000)
    echo: bool = False


class AuthSettings(BaseModel):
    """Tokens, passwords and login throttling."""

    algorithm: Literal["HS256", "EdDSA", "RS256"] = "HS256"
    issuer: str = "ragd"
    audience: str = "ragd-api"
    access_token_ttl_seconds: int = Field(default=15 * 60, ge=30, le=24 * 3600)
    refresh_token_ttl_seconds: int = Field(default=14 * 24 * 3600, ge=300, le=365 * 24 * 3600)
    leeway_seconds: int = Field(default=30, ge=0, le=60)
    previous_jwt_secret: SecretStr | None = Field(
        default=None, description="Still accepted for verification while keys rotate."
    )
    private_key_file: Path | None = Field(default=None, description="PEM, for EdDSA/RS256.")
    public_key_file: Path | None = None
    previous_public_key_file: Path | None = None
    argon2_memory_kib: int = Field(default=19 * 1024, ge=19 * 1024)
    argon2_time_cost: int = Field(default=2, ge=2)
    argon2_parallelism: int = Field(default=1, ge=1, le=16)
    password_min_length: int = Field(default=10, ge=10, le=128)
    password_min_score: int = Field(default=3, ge=0, le=4, description="zxcvbn score 0-4.")
    login_attempts_per_account: int = Field(default=10, ge=1)
    login_attempts_per_ip: int = Field(default=50, ge=1)
    login_window_seconds: int = Field(default=300, ge=1)
    hash_concurrency: int = Field(
        default=4, ge=1, le=64, description="Password hashes computed at once (memory bound)."
    )
    revocation_sync_seconds: float = Field(default=2.0, gt=0, le=300)
    refresh_reuse_grace_seconds: float = Field(
        default=0.0,
        ge=0,
        le=60,
        description=(
            "A spent refresh token presented again within this many seconds of its rotation "
            "is refused (401) without revoking the session, so two tabs refreshing at once do "
            "not log the user out. 0 = strict RFC 9700 reuse detection."
        ),
    )

    @model_validator(mode="after")
    def _lifetimes(self) -> AuthSettings:
        # Revoked sessions are remembered until the session would expire; an access token
        # outliving its session could come back to life after that.
        if self.access_token_ttl_seconds >= self.refresh_token_ttl_seconds:
            raise ValueError("access_token_ttl_seconds must be shorter than the refresh lifetime")
        return self


class ModelsSettings(BaseModel):
    """Model runtime: which embedder/reranker, how they load, idle, batch and run."""

    embedder: Literal["minilm", "onnx", "openai"] = Field(
        default="minilm",
        description="minilm: all-MiniLM-L6-v2 from PyPI packages (offline); onnx: a local "
        "ONNX sentence-embedding directory; openai: an OpenAI-compatible /v1/embeddings API.",
    )
    quantize: bool = Field(
        default=True, description="minilm: prepare a per-channel int8 model in the data dir."
    )
    cache_dir: Path | None = Field(
        default=None,
        description="Where prepared models live (<dir>/models/...); default: the data dir. "
        "Several data dirs may share one.",
    )
    embedder_path: Path | None = Field(default=None, description="onnx: model directory.")
    pooling: Literal["mean", "cls"] = "mean"
    normalize: bool = True
    max_tokens: int = Field(default=256, ge=8, le=8192)
    query_prefix: str = Field(default="", max_length=64, description='E5 uses "query: ".')
    passage_prefix: str = Field(default="", max_length=64, description='E5 uses "passage: ".')
    openai_base_url: str | None = None
    openai_api_key: SecretStr | None = None
    openai_model: str | None = None
    openai_timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    reranker: Literal["none", "onnx"] = "none"
    reranker_path: Path | None = None
    reranker_max_tokens: int = Field(default=512, ge=16, le=8192)
    idle_ttl_seconds: float = Field(default=1800.0, ge=0, description="0 = never unload.")
    load_retry_seconds: float = Field(default=5.0, ge=0, le=3600, description="first backoff")
    # One intra-op thread per model call; parallelism comes from concurrent calls (the
    # inference pool, 2 ingestion workers, concurrent searches). Measured on 2 cores with
    # MiniLM int8: two callers embed 99 passages/s with 1 thread each against 74/s with 2
    # (oversubscribed), and a query costs 1.7 ms of CPU instead of 3.4 ms for the same wall
    # time. A lone caller is ~27 % slower on long passages; raise this for single-user boxes.
    inference_threads: int = Field(
        default=1, ge=0, le=64, description="ONNX Runtime intra-op threads; 0 = cores."
    )
    pool_workers: int = Field(default=2, ge=1, le=64, description="inference thread pool")
    batch_window_ms: float = Field(default=4.0, ge=0, le=1000)
    max_batch: int = Field(default=64, ge=1, le=4096)
    keywords_top_n: int = Field(default=5, ge=1, le=50)
    keywords_ngram_max: int = Field(default=2, ge=1, le=3)
    keywords_diversity: float = Field(default=0.5, ge=0, le=1)
    keywords_max_chars: int = Field(default=100_000, ge=100, le=10_000_000)

    @model_validator(mode="after")
    def _needs(self) -> ModelsSettings:
        if self.embedder == "onnx" and self.embedder_path is None:
            raise ValueError("models.embedder=onnx needs models.embedder_path")
        if self.embedder == "openai" and not (self.openai_base_url and self.openai_model):
            raise ValueError("models.embedder=openai needs openai_base_url and openai_model")
        if self.reranker == "onnx" and self.reranker_path is None:
            raise ValueError("models.reranker=onnx needs models.reranker_path")
        return self


class MemorySettings(BaseModel):
    """The memory manager: RSS thresholds, monitoring cadence, cache budgets."""

    monitor_interval_seconds: float = Field(default=30.0, gt=0, le=3600)
    soft_limit_mb: float = Field(default=1536.0, gt=0)
    emergency_limit_mb: float = Field(default=2048.0, gt=0)
    cache_cleanup_interval_seconds: float = Field(default=120.0, gt=0, le=86400)
    query_cache_mb: float = Field(default=32.0, ge=0)
    keyword_cache_mb: float = Field(default=8.0, ge=0)
    phrase_cache_mb: float = Field(
        default=16.0, ge=0, description="Vectors of keyword candidate phrases (ingestion)."
    )
    cache_ttl_seconds: float = Field(default=3600.0, gt=0)
    soft_idle_seconds: float = Field(
        default=300.0,
        gt=0,
        description="At the soft threshold, unload models unused this long (or past their TTL).",
    )

    @model_validator(mode="after")
    def _ordered(self) -> MemorySettings:
        if self.soft_limit_mb >= self.emergency_limit_mb:
            raise ValueError("soft_limit_mb must be below emergency_limit_mb")
        return self


class IngestionSettings(BaseModel):
    """Uploads, parsing limits, chunking and the ingestion worker pool."""

    workers: int = Field(
        default=2, ge=0, le=64,
        description="Ingestion workers inside `ragd serve` (0: only `ragd worker` processes).",
    )
    max_upload_mb: float = Field(default=50.0, gt=0, le=4096)
    max_text_chars: int = Field(default=5_000_000, ge=1, description="JSON text documents.")
    parse_timeout_seconds: float = Field(default=60.0, gt=0, le=3600)
    parse_memory_mb: int = Field(default=1024, ge=64, le=65536)
    parse_cpu_seconds: int = Field(default=120, ge=1, le=86400)
    parse_concurrency: int = Field(default=2, ge=1, le=64)
    max_pages: int = Field(default=2000, ge=1)
    chunk_target_tokens: int = Field(
        default=220, ge=16, le=8192,
        description="Chunk size in embedder tokens (room left for the heading prefix).",
    )
    chunk_overlap_tokens: int = Field(default=32, ge=0, le=1024)
    keywords_enabled: bool = True
    keywords_top_n: int = Field(default=5, ge=1, le=50)
    embed_batch: int = Field(default=64, ge=1, le=4096)
    max_attempts: int = Field(default=3, ge=1, le=20)
    lease_seconds: float = Field(default=60.0, ge=1, le=3600)
    poll_interval_seconds: float = Field(default=1.0, gt=0, le=60)
    job_retention_days: float = Field(
        default=14.0, gt=0, description="Finished jobs are deleted this long after they end."
    )
    delete_inline_chunks: int = Field(
        default=5000, ge=0,
        description="Collections with more chunks than this are deleted by a background job.",
    )

    @model_validator(mode="after")
    def _sizes(self) -> IngestionSettings:
        if self.chunk_overlap_tokens >= self.chunk_target_tokens:
            raise ValueError("chunk_overlap_tokens must be below chunk_target_tokens")
        return self

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


class ProviderSettings(BaseModel):
    """One LLM provider of the ordered chain (``[[llm.providers]]`` in TOML)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    type: Literal["openai", "anthropic", "extractive"]
    model: str = Field(default="", max_length=200)
    base_url: str | None = Field(
        default=None, description="openai: e.g. http://127.0.0.1:8080/v1; anthropic: API root."
    )
    api_key: SecretStr | None = None
    connect_timeout_seconds: float = Field(default=5.0, gt=0, le=300)
    timeout_seconds: float = Field(
        default=30.0, gt=0, le=600,
        description="One attempt; streaming: the wait for the first token and between tokens.",
    )
    max_tokens: int = Field(default=1024, ge=1, le=200_000)
    temperature: float = Field(default=0.1, ge=0, le=2)
    extra_headers: dict[str, str] = Field(default_factory=dict)
    max_attempts: int = Field(default=3, ge=1, le=10, description="Attempts per request.")

    @model_validator(mode="after")
    def _complete(self) -> ProviderSettings:
        if self.type != "extractive" and not self.model:
            raise ValueError(f"provider {self.name}: model is required for type {self.type}")
        if self.type == "openai" and not self.base_url:
            raise ValueError(f"provider {self.name}: base_url is required for type openai")
        return self


class LLMSettings(BaseModel):
    """The ordered provider chain, retries, circuit breakers and the answer pipeline."""

    providers: list[ProviderSettings] = Field(
        default_factory=list,
        description="Tried in order; the extractive provider is always appended last.",
    )
    deadline_seconds: float = Field(default=60.0, gt=0, le=3600)
    backoff_base_seconds: float = Field(default=0.5, ge=0, le=60)
    backoff_max_seconds: float = Field(default=8.0, ge=0, le=300)
    retry_after_max_seconds: float = Field(default=20.0, ge=0, le=600)
    breaker_failures: int = Field(default=5, ge=1, le=1000)
    breaker_window_seconds: float = Field(default=60.0, gt=0, le=3600)
    breaker_failure_rate: float = Field(default=0.5, gt=0, le=1)
    breaker_min_calls: int = Field(default=10, ge=1, le=10_000)
    breaker_cooldown_seconds: float = Field(default=30.0, gt=0, le=3600)
    top_k: int = Field(default=6, ge=1, le=50, description="Chunks given to the model.")
    min_relevance: float = Field(
        default=0.25, ge=-1, le=1,
        description="Best dense cosine below which the answer is 'not in the documents'.",
    )
    max_question_chars: int = Field(default=4000, ge=1, le=100_000)
    max_context_chars: int = Field(default=24_000, ge=1000, le=1_000_000)
    history_turns: int = Field(default=6, ge=0, le=100)

    @model_validator(mode="after")
    def _unique(self) -> LLMSettings:
        names = [p.name for p in self.providers]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate provider names: {', '.join(duplicates)}")
        return self


class Settings(BaseSettings):
    """Effective configuration of one ragd process."""

    model_config = SettingsConfigDict(
        env_prefix="RAGD_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    env: Literal["development", "production"] = "development"
    data_dir: Path = Path("./data")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["auto", "json", "text"] = "auto"
    jwt_secret: SecretStr | None = None
    allow_registration: bool = True
    bootstrap_admin: bool | None = Field(
        default=None,
        description="Create a first platform admin on an empty database (default: dev only).",
    )
    max_request_bytes: int = Field(default=1024 * 1024, ge=1024)
    public_performance: bool = Field(
        default=False, description="Serve GET /performance/* without a platform admin token."
    )
    database: DatabaseSettings = DatabaseSettings()
    auth: AuthSettings = AuthSettings()
    models: ModelsSettings = ModelsSettings()
    memory: MemorySettings = MemorySettings()
    ingestion: IngestionSettings = IngestionSettings()
    llm: LLMSettings = LLMSettings()

    @field_validator("data_dir")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @model_validator(mode="after")
    def _production_secrets(self) -> Settings:
        if self.env != "production":
            return self
        if self.auth.algorithm == "HS256":
            problem = secret_problem(self.jwt_secret)
            if problem:
                raise ValueError(f"RAGD_JWT_SECRET {problem} (required in production)")
            previous = self.auth.previous_jwt_secret
            if previous is not None and (problem := secret_problem(previous)):
                raise ValueError(f"RAGD_AUTH__PREVIOUS_JWT_SECRET {problem}")
        elif self.auth.private_key_file is None or self.auth.public_key_file is None:
            raise ValueError(
                f"auth.algorithm={self.auth.algorithm} needs auth.private_key_file and "
                "auth.public_key_file"
            )
        return self

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @property
    def database_url(self) -> str:
        if self.database.url:
            return self.database.url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'ragd.db').resolve()}"

    @property
    def model_cache_dir(self) -> Path:
        """The directory under which prepared models are kept (``<dir>/models/...``)."""
        return self.models.cache_dir or self.data_dir

    @property
    def should_bootstrap_admin(self) -> bool:
        if self.bootstrap_admin is None:
            return not self.is_production
        return self.bootstrap_admin

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_path = _toml_file.get()
        if toml_path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        return tuple(sources)


def secret_problem(secret: SecretStr | None) -> str | None:
    """Why ``secret`` is unfit for signing tokens, or None when it is fine."""
    if secret is None or not secret.get_secret_value():
        return "is not set"
    value = secret.get_secret_value()
    if value.strip().lower() in PLACEHOLDER_SECRETS or len(set(value)) <= 2:
        return "is a placeholder value"
    if len(value.encode()) < MIN_SECRET_BYTES:
        return f"must be at least {MIN_SECRET_BYTES} bytes"
    return None


@contextmanager
def _toml_source(path: Path | None) -> Iterator[None]:
    token = _toml_file.set(path)
    try:
        yield
    finally:
        _toml_file.reset(token)


def load_settings(config_file: Path | str | None = None, **overrides: Any) -> Settings:
    """Build the settings from overrides, the environment and an optional TOML file.

    Raises :class:`ConfigurationError` with one readable line per problem.
    """
    raw_path = config_file or os.environ.get("RAGD_CONFIG")
    path = Path(raw_path).expanduser() if raw_path else None
    if path is not None and not path.is_file():
        raise ConfigurationError(f"config file not found: {path}")
    clean = {key: value for key, value in overrides.items() if value is not None}
    try:
        with _toml_source(path):
            return Settings(**clean)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"]) or "settings"
            lines.append(f"  {where}: {error['msg']}")
        raise ConfigurationError("invalid settings:\n" + "\n".join(lines)) from None
    except ValueError as exc:  # TOML syntax errors surface here
        raise ConfigurationError(f"invalid settings: {exc}") from None


def ensure_data_dir(settings: Settings) -> Path:
    """Create the data directory (mode 0700) if needed and return it."""
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    return settings.data_dir


def with_runtime_secret(settings: Settings) -> Settings:
    """Return settings that carry a usable JWT secret.

    In production the validator already guarantees one. In development, a random secret is
    generated once and kept in the data dir (mode 0600) so restarts keep sessions valid.
    """
    if settings.auth.algorithm != "HS256" or secret_problem(settings.jwt_secret) is None:
        return settings
    if settings.is_production:  # unreachable through load_settings; kept as a guard
        raise ConfigurationError("RAGD_JWT_SECRET is required in production")
    if settings.jwt_secret is not None and settings.jwt_secret.get_secret_value():
        logger.warning(
            "RAGD_JWT_SECRET %s; using the generated development secret instead",
            secret_problem(settings.jwt_secret),
        )
    path = ensure_data_dir(settings) / DEV_SECRET_FILE
    if path.exists():
        value = path.read_text(encoding="utf-8").strip()
    else:
        value = secrets.token_urlsafe(48)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(value + "\n")
        logger.info("generated a development JWT secret", extra={"path": str(path)})
    if secret_problem(SecretStr(value)) is not None:
        raise ConfigurationError(f"the development secret in {path} is unusable; delete it")
    return settings.model_copy(update={"jwt_secret": SecretStr(value)})


MASK = "**********"


def masked(settings: Settings) -> dict[str, Any]:
    """The effective settings as JSON-able data, secrets replaced by :data:`MASK`."""
    data: dict[str, Any] = settings.model_dump(mode="json")
    data["jwt_secret"] = MASK if settings.jwt_secret else None
    if settings.auth.previous_jwt_secret is not None:
        data["auth"]["previous_jwt_secret"] = MASK
    if settings.models.openai_api_key is not None:
        data["models"]["openai_api_key"] = MASK
    for index, provider in enumerate(settings.llm.providers):
        if provider.api_key is not None:
            data["llm"]["providers"][index]["api_key"] = MASK
    if settings.database.url and "@" in settings.database.url:
        scheme, _, rest = settings.database.url.partition("://")
        data["database"]["url"] = f"{scheme}://{MASK}@{rest.rpartition('@')[2]}"
    return data
