"""Settings: pydantic-settings, env prefix ``RAGD_``, optional TOML file.

Settings are built by :func:`load_settings`, never at import time. Precedence, highest first:
explicit keyword overrides (the CLI's flags), environment variables, the TOML file
(``--config`` or ``RAGD_CONFIG``), defaults. Nested groups use ``__`` in environment
variables, e.g. ``RAGD_AUTH__ACCESS_TOKEN_TTL_SECONDS=600``.

Nothing is ignored quietly: an unknown key in the file (at the top or in any table) and a
``RAGD_`` variable that is not a setting (a typo such as ``RAGD_JWT_SECRT``) stop the process
like an invalid value does, with the closest valid name when there is one.
"""

from __future__ import annotations

import contextvars
import difflib
import json
import logging
import os
import re
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
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

#: ``RAGD_`` variables that are read directly rather than as settings. The unknown-variable
#: check accepts them. The test suite and the benchmarks start ragd processes with the
#: developer's environment, so their knobs are listed too; ``tests/test_settings.py`` checks
#: that every ``RAGD_`` name read from the environment anywhere in the code is known.
CONFIG_ENV = "RAGD_CONFIG"
OTHER_VARIABLES: Mapping[str, str] = {
    CONFIG_ENV: "the TOML settings file",
    "RAGD_URL": "ragd ingest: the server URL",
    "RAGD_API_KEY": "ragd ingest: the API key",
    "RAGD_TOKEN": "ragd ingest: a bearer token",
    "RAGD_CRASH_KILLS": "tests: SIGKILLs of the crash-consistency test",
    "RAGD_CRASH_SEED": "tests: seed of the crash-consistency test",
    "RAGD_CRASH_KEYWORDS": "tests: keywords in the crash-consistency test",
    "RAGD_EVAL_DIR": "tests: the evaluation documents",
    "RAGD_FUZZ_EXAMPLES": "tests: cases per operation of the schema fuzzing",
    "RAGD_FUZZ_SEED": "tests: seed of the schema fuzzing",
    "RAGD_TEST_PG_URL": "tests: an external PostgreSQL server instead of the embedded one",
    "RAGD_BENCH_EVAL": "bench: the evaluation data sets",
    "RAGD_BENCH_MODEL_CACHE": "bench: prepared models",
    "RAGD_BENCH_CORPUS": "bench: the models benchmark corpus",
}
ENV_PREFIX = "RAGD_"
_NESTED = "__"
#: What Kubernetes injects into every pod for every Service in the namespace (service links):
#: a Service named ``ragd-api`` yields ``RAGD_API_SERVICE_HOST``, ``RAGD_API_PORT=tcp://...``
#: and so on. They are not typos of settings and an operator may not control them.
_SERVICE_LINK = re.compile(
    r"RAGD_\w+_(SERVICE_HOST|SERVICE_PORT(_\w+)?|PORT_\d+_(TCP|UDP|SCTP)(_(PROTO|PORT|ADDR))?)"
)
_SERVICE_LINK_PORT = re.compile(r"RAGD_\w+_PORT")
_SERVICE_LINK_URL = re.compile(r"(tcp|udp|sctp)://\S+:\d+")

_toml_file: contextvars.ContextVar[Path | None] = contextvars.ContextVar(
    "ragd_settings_toml", default=None
)
#: Environment variables (upper case) that the settings must not read: they were reported.
_skipped_env: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar(
    "ragd_settings_skipped_env", default=frozenset()
)


class SettingsGroup(BaseModel):
    """A group of settings (a TOML table, ``RAGD_<GROUP>__`` variables): an unknown key is
    an error, never silently ignored."""

    model_config = ConfigDict(extra="forbid")


class DatabaseSettings(SettingsGroup):
    """Where the source-of-truth database lives."""

    url: str | None = Field(
        default=None,
        description="SQLAlchemy async URL; default: sqlite+aiosqlite in the data dir.",
    )
    busy_timeout_ms: int = Field(
        default=15_000, ge=0, le=600_000,
        description=(
            "How long a write waits for its turn (behind this process's other writes, then "
            "behind another process's) before the request answers 503 with Retry-After."
        ),
    )
    echo: bool = False
    migrate_on_start: bool = Field(
        default=True,
        description=(
            "Bring the schema to this version's head when a process starts (under a lock: "
            "once however many start together). Turn it off for API replicas and workers "
            "when a one-shot `ragd db upgrade` migrates (scale-out): a process whose schema "
            "is behind then starts, answers /health/ready with 503 and other requests with "
            "503 schema_pending, and becomes ready by itself once the schema is at head. A "
            "schema newer than this version is an error at start either way."
        ),
    )


class AuthSettings(SettingsGroup):
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


class ModelsSettings(SettingsGroup):
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


class MemorySettings(SettingsGroup):
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
    malloc_arenas: int = Field(
        default=2, ge=0, le=64,
        description="glibc malloc arenas of ragd serve/worker (0: glibc's default of 8 per "
        "core). MALLOC_ARENA_MAX in the environment wins.",
    )
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


class IngestionSettings(SettingsGroup):
    """Uploads, parsing limits, chunking and the ingestion worker pool."""

    # 4, not one per core: a small document spends most of its time outside the model
    # (database writes, parsing), so two loops kept the two inference slots busy ~40 % of the
    # time; four overlap those waits (measured: 15.1 -> 16.3 documents/s in process).
    workers: int = Field(
        default=4, ge=0, le=64,
        description="Ingestion workers inside `ragd serve` (0: only `ragd worker` processes).",
    )
    max_upload_mb: float = Field(default=50.0, gt=0, le=4096)
    max_text_chars: int = Field(default=5_000_000, ge=1, description="JSON text documents.")
    parse_timeout_seconds: float = Field(default=60.0, gt=0, le=3600)
    parse_memory_mb: int = Field(default=1024, ge=64, le=65536)
    parse_cpu_seconds: int = Field(default=120, ge=1, le=86400)
    parse_concurrency: int = Field(default=2, ge=1, le=64)
    max_pages: int = Field(default=2000, ge=1)
    # Caps that cut a document instead of refusing it: it is indexed up to the cap and carries
    # a warning that says what was left out. They bound the time one document holds a worker.
    max_parsed_chars: int = Field(
        default=5_000_000, ge=1000,
        description="Characters of parsed text kept per document (before chunking).",
    )
    max_csv_rows: int = Field(default=50_000, ge=1, description="CSV rows read after the header.")
    max_csv_columns: int = Field(default=512, ge=1, description="CSV cells read per row.")
    max_chunks_per_document: int = Field(
        default=3000, ge=1, le=1_000_000,
        description="Chunks embedded and indexed per document; the rest is not indexed.",
    )
    chunk_target_tokens: int = Field(
        default=220, ge=16, le=8192,
        description="Chunk size in embedder tokens (room left for the heading prefix).",
    )
    chunk_overlap_tokens: int = Field(default=32, ge=0, le=1024)
    keywords_enabled: bool = True
    keywords_top_n: int = Field(default=5, ge=1, le=50)
    embed_batch: int = Field(default=64, ge=1, le=4096)
    commit_batch_chunks: int = Field(
        default=1000, ge=1, le=100_000,
        description=(
            "A document version of more chunks is written in batches of this many (each a "
            "short transaction) before one transaction makes it searchable."
        ),
    )
    max_attempts: int = Field(default=3, ge=1, le=100)
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


#: The API root a provider type talks to when ``base_url`` is not set.
DEFAULT_BASE_URLS = {"openai": "https://api.openai.com/v1", "anthropic": "https://api.anthropic.com"}
#: What to write instead of a ``type`` that names a server or product (keys: lower-case
#: letters and digits only). Every one of these speaks one of the two supported protocols.
_TYPE_HINTS = {
    "ollama": 'type "openai" with base_url "http://127.0.0.1:11434/v1" (Ollama serves the '
              "OpenAI API)",
    "vllm": 'type "openai" with base_url "http://HOST:8000/v1" (vLLM serves the OpenAI API)',
    "llamacpp": 'type "openai" with base_url "http://HOST:8080/v1" (llama.cpp\'s llama-server '
                "serves the OpenAI API)",
    "llamaserver": 'type "openai" with base_url "http://HOST:8080/v1" (llama.cpp\'s '
                   "llama-server serves the OpenAI API)",
    "lmstudio": 'type "openai" with base_url "http://127.0.0.1:1234/v1" (LM Studio serves the '
                "OpenAI API)",
    "claude": 'type "anthropic"',
    "gpt": 'type "openai"',
    "chatgpt": 'type "openai"',
    "openaicompatible": 'type "openai" with the server\'s base_url',
    "compatible": 'type "openai" with the server\'s base_url',
    **{
        product: 'type "openai" with base_url set to its OpenAI-compatible endpoint'
        for product in ("azure", "azureopenai", "groq", "openrouter", "together", "mistral",
                        "deepseek", "gemini", "google", "localai", "tgi", "fireworks",
                        "perplexity", "xai", "grok", "sglang", "litellm")
    },
}


class ProviderSettings(SettingsGroup):
    """One LLM provider of the ordered chain (``[[llm.providers]]`` in TOML)."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    type: Literal["openai", "anthropic", "extractive"]
    model: str = Field(default="", max_length=200)
    base_url: str | None = Field(
        default=None,
        description="openai: the API root ending in /v1 (default https://api.openai.com/v1; "
        "e.g. http://127.0.0.1:11434/v1 for Ollama); anthropic: default "
        "https://api.anthropic.com.",
    )
    api_key: SecretStr | None = None
    api_key_env: str | None = Field(
        default=None, max_length=200, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Read api_key from this environment variable (keeps the key out of the "
        "config file).",
    )
    connect_timeout_seconds: float = Field(default=5.0, gt=0, le=300)
    timeout_seconds: float = Field(
        default=30.0, gt=0, le=600,
        description="One attempt; streaming: the wait for the first token and between tokens.",
    )
    max_tokens: int = Field(default=1024, ge=1, le=200_000)
    temperature: float = Field(default=0.1, ge=0, le=2)
    extra_headers: dict[str, str] = Field(default_factory=dict)
    max_attempts: int = Field(default=3, ge=1, le=10, description="Attempts per request.")

    @field_validator("type", mode="before")
    @classmethod
    def _known_type(cls, value: Any) -> Any:
        valid = ("openai", "anthropic", "extractive")
        if not isinstance(value, str) or value in valid:
            return value
        key = "".join(c for c in value.lower() if c.isalnum())
        hint = _TYPE_HINTS.get(key)
        if hint is None and key in valid:
            hint = f'type "{key}"'
        if hint is None:
            close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
            hint = f'type "{close[0]}"' if close else None
        listed = ", ".join(repr(v) for v in valid)
        raise PydanticCustomError(
            "provider_type",
            "unknown provider type {value}{hint} (valid types: {listed})",
            {"value": repr(value), "hint": f": use {hint}" if hint else "", "listed": listed},
        )

    @model_validator(mode="after")
    def _complete(self) -> ProviderSettings:
        if self.type != "extractive" and not self.model:
            raise ValueError(f"provider {self.name}: model is required for type {self.type}")
        if self.api_key_env and (self.api_key is None or not self.api_key.get_secret_value()):
            key = os.environ.get(self.api_key_env, "").strip()
            if not key:
                raise ValueError(
                    f"provider {self.name}: api_key_env names {self.api_key_env}, which is "
                    "not set or empty"
                )
            self.api_key = SecretStr(key)
        default = DEFAULT_BASE_URLS.get(self.type)
        if default is not None and not self.base_url:
            if self.api_key is None or not self.api_key.get_secret_value():
                raise ValueError(
                    f"provider {self.name}: api_key is required for {default} (set base_url "
                    "for a local or self-hosted server)"
                )
            self.base_url = default
        return self


class LLMSettings(SettingsGroup):
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
    min_relevance: float | None = Field(
        default=None, ge=-1, le=1,
        description="Best dense cosine below which the answer is 'not in the documents' (no "
        "model is asked). Default: the value calibrated for the configured embedder "
        "(minilm); 0.25 for an embedder ragd has not calibrated.",
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
    allow_registration: bool | None = Field(
        default=None,
        description="Let anyone create a tenant with POST /auth/register (default: dev only).",
    )
    api_docs: bool | None = Field(
        default=None,
        description="Serve /docs (Swagger UI), /redoc (ReDoc) and /openapi.json (default: dev "
        "only; the schema maps every route and rule for whoever asks).",
    )
    console: bool = Field(
        default=True,
        description="Serve the web console at / (static files; it uses the public API).",
    )
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
    def registration_open(self) -> bool:
        return not self.is_production if self.allow_registration is None else \
            self.allow_registration

    @property
    def serves_api_docs(self) -> bool:
        return not self.is_production if self.api_docs is None else self.api_docs

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
        skipped = _skipped_env.get()
        if skipped and isinstance(env_settings, EnvSettingsSource):
            # A variable already reported (a typo, broken JSON) is left out, so the rest of
            # the configuration is still validated and every problem is listed at once.
            env_settings.env_vars = {
                name: value for name, value in env_settings.env_vars.items()
                if name.upper() not in skipped
            }
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
def _sources(path: Path | None, skipped_env: frozenset[str]) -> Iterator[None]:
    file_token = _toml_file.set(path)
    env_token = _skipped_env.set(skipped_env)
    try:
        yield
    finally:
        _skipped_env.reset(env_token)
        _toml_file.reset(file_token)


def load_settings(config_file: Path | str | None = None, **overrides: Any) -> Settings:
    """Build the settings from overrides, the environment and an optional TOML file.

    Raises :class:`ConfigurationError` with one readable line per problem: invalid values,
    unknown keys in the file (with the likely intended key), ``RAGD_`` variables that are
    not settings, and complex variables that are not the JSON they must be.
    """
    raw_path = config_file or os.environ.get(CONFIG_ENV)
    path = Path(raw_path).expanduser() if raw_path else None
    if path is not None and not path.is_file():
        raise ConfigurationError(f"config file not found: {path}")
    clean = {key: value for key, value in overrides.items() if value is not None}
    environment = environment_problems(os.environ)
    problems = list(environment.values())
    try:
        with _sources(path, frozenset(name.upper() for name in environment)):
            settings = Settings(**clean)
    except ValidationError as exc:
        problems += [_describe(error) for error in exc.errors()]
    except SettingsError as exc:  # not expected: environment_problems() checks the JSON
        problems.append(str(exc))
    except ValueError as exc:  # TOML syntax errors surface here
        problems.append(str(exc))
    else:
        if not problems:
            return settings
    raise ConfigurationError(
        "invalid settings:\n" + "\n".join(f"  {line}" for line in problems)
    ) from None


def setting_variables() -> dict[str, str]:
    """Every environment variable that sets something, mapped to what it sets: one per
    setting (``RAGD_AUTH__ISSUER`` -> ``auth.issuer``) and one per group, which takes the
    whole group as a JSON object (``RAGD_AUTH`` -> ``auth``)."""
    names: dict[str, str] = {}
    for name, field in Settings.model_fields.items():
        names[ENV_PREFIX + name.upper()] = name
        group = _group_model(field.annotation)
        if group is not None and get_origin(field.annotation) is None:
            for sub in group.model_fields:
                names[f"{ENV_PREFIX}{name.upper()}{_NESTED}{sub.upper()}"] = f"{name}.{sub}"
    return names


def environment_problems(environ: Mapping[str, str]) -> dict[str, str]:
    """The ``RAGD_`` variables that would be ignored (not a setting, not one of
    :data:`OTHER_VARIABLES`: usually a typo) or that do not hold the JSON their setting
    needs, each with one line saying so. Values are never quoted: they may be secrets."""
    settings = setting_variables()
    known = set(settings) | set(OTHER_VARIABLES)
    problems: dict[str, str] = {}
    for name in sorted(environ):
        upper = name.upper()  # pydantic-settings reads the variables case-insensitively
        if not upper.startswith(ENV_PREFIX):
            continue
        value = environ[name]
        if upper not in known:
            if not _is_service_link(upper, value):
                stems = {known_name.removeprefix(ENV_PREFIX): known_name for known_name in known}
                hint = _close(upper.removeprefix(ENV_PREFIX), stems)
                problems[name] = f"unknown environment variable {name}{hint}"
            continue
        if upper in settings and (problem := _json_problem(settings[upper], value)):
            problems[name] = f"{name} must be {problem}"
    return problems


def _is_service_link(name: str, value: str) -> bool:
    if _SERVICE_LINK.fullmatch(name):
        return True
    return bool(_SERVICE_LINK_PORT.fullmatch(name) and _SERVICE_LINK_URL.fullmatch(value))


def _json_problem(setting: str, value: str) -> str | None:
    """Why ``value`` cannot be the JSON of ``setting`` (None for scalar settings and for
    JSON of the right outer shape: pydantic then checks the contents)."""
    model: type[BaseModel] = Settings
    annotation: Any = None
    for part in setting.split("."):
        annotation = model.model_fields[part].annotation
        inner = _group_model(annotation)
        if inner is None:
            return None  # a scalar setting
        model = inner
    is_list = get_origin(annotation) is list
    shape = (
        f"a JSON list of {model.__name__.removesuffix('Settings').lower()} objects" if is_list
        else f"a JSON object of {setting} settings"
    )
    if not value.strip():
        return f"{shape}: the value is empty"
    try:
        data = json.loads(value)
    except json.JSONDecodeError as exc:
        return f"{shape}: {exc.msg} at line {exc.lineno}, column {exc.colno} (character {exc.pos})"
    if not isinstance(data, list if is_list else dict):
        return f"{shape}: the value is {_json_kind(data)}"
    for index, item in enumerate(data if is_list else []):
        if not isinstance(item, dict):
            return f"{shape}: item {index} is {_json_kind(item)}"
    return None


def _json_kind(value: Any) -> str:
    kinds = [(dict, "an object"), (list, "a list"), (str, "a string"), (bool, "a boolean"),
             (int | float, "a number")]
    return next((kind for cls, kind in kinds if isinstance(value, cls)), "null")


def _group_model(annotation: Any) -> type[BaseModel] | None:
    """The settings model behind a field: its type, or its list's item type."""
    if get_origin(annotation) is list:
        annotation = get_args(annotation)[0]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _describe(error: Any) -> str:
    """One line for one validation error; unknown keys name the likely intended key."""
    loc = tuple(error["loc"])
    where = _where(loc)
    if error["type"] != "extra_forbidden":
        return f"{where}: {error['msg']}"
    model: type[BaseModel] = Settings
    for part in loc[:-1]:
        if isinstance(part, str):
            field = model.model_fields.get(part)
            inner = None if field is None else _group_model(field.annotation)
            if inner is None:
                return f"unknown setting {where}"
            model = inner
    key = str(loc[-1])
    hint = _close(key, {name: name for name in model.model_fields})
    if not hint and model is Settings:
        # A group's key at the top of the file: the [table] header is missing.
        hint = _close(key, {
            sub: f"{name}.{sub}" for name, field in Settings.model_fields.items()
            if (inner := _group_model(field.annotation)) is not None
            for sub in inner.model_fields
        })
    return f"unknown setting {where}{hint}"


def _where(loc: tuple[Any, ...]) -> str:
    where = ""
    for part in loc:
        where += f"[{part}]" if isinstance(part, int) else f".{part}" if where else str(part)
    return where or "settings"


def _close(name: str, candidates: Mapping[str, str]) -> str:
    """`` (did you mean X?)`` when a key of ``candidates`` is close to ``name`` (X is its
    value), else ``""``."""
    found = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.75)
    if not found:
        # A unit left off (``leeway`` for ``leeway_seconds``) scores low on similarity.
        found = [key for key in candidates if key.startswith(f"{name}_")][:2]
        found = found if len(found) == 1 else []
    return f" (did you mean {candidates[found[0]]}?)" if found else ""


def ensure_data_dir(settings: Settings) -> Path:
    """Create the data directory (mode 0700) if needed and return it."""
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    return settings.data_dir


def with_runtime_secret(settings: Settings) -> Settings:
    """Return settings that carry a usable JWT secret.

    In production the validator already guarantees one. In development, a random secret is
    generated once and kept in the data dir (mode 0600) so restarts keep sessions valid; not
    with a shared (PostgreSQL) database, whose processes share no data dir.
    """
    if settings.auth.algorithm != "HS256" or secret_problem(settings.jwt_secret) is None:
        return settings
    if settings.is_production:  # unreachable through load_settings; kept as a guard
        raise ConfigurationError("RAGD_JWT_SECRET is required in production")
    if not settings.database_url.startswith("sqlite"):
        # A generated secret lives in one data dir: replicas on a shared database would each
        # sign with their own, and refuse each other's tokens.
        raise ConfigurationError(
            "RAGD_JWT_SECRET is required with a shared database (every replica and worker "
            f"must sign and verify tokens with the same secret): it "
            f"{secret_problem(settings.jwt_secret)}"
        )
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
