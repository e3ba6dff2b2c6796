"""One typed settings object, read from defaults, ``SEMQA_*`` environment variables and CLI flags.

Precedence (highest first): command-line flags, environment variables, the defaults below.
The object is built once by the CLI (or by tests) and passed down; nothing else reads the environment.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, get_args

from limits import parse_many
from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from embeddings.backends import AUTO, BACKENDS, NEW_INDEX_BACKEND, BackendSetting

Mode = Literal["hybrid", "dense", "lexical"]
MODES: tuple[str, ...] = get_args(Mode)
BACKEND_SETTINGS: tuple[str, ...] = get_args(BackendSetting)
Fusion = Literal["zscore", "minmax", "rrf"]
FUSIONS: tuple[str, ...] = get_args(Fusion)
Engine = Literal["local", "ray"]
ENGINES: tuple[str, ...] = get_args(Engine)
Ranking = Literal["model", "fusion"]
RANKINGS: tuple[str, ...] = get_args(Ranking)
MAX_FILTER_DOCUMENTS = 1000  # document ids a search may be restricted to (HTTP API and MCP)


class Settings(BaseSettings):
    """Every knob of semqa. Each field ``name`` is also read from ``SEMQA_NAME``."""

    model_config = SettingsConfigDict(env_prefix="SEMQA_", extra="forbid", validate_assignment=True)

    # Where things live.
    corpus: Path = Field(Path("corpus"), description="Folder (or file) indexed when no path is given.")
    index_dir: Path = Field(Path(".semqa/index"), description="Index directory (versions + CURRENT pointer).")
    cache_dir: Path = Field(Path(".semqa/cache"), description="Embedding cache (keyed by text hash).")

    # Embedding model.
    model: str = Field(
        "", description="Path of a sentence-transformers model folder; empty = packaged MiniLM."
    )
    model_sha256: str = Field(
        "",
        description="Expected sha256 of the model's model.safetensors; empty = the packaged model's known hash.",
    )
    backend: BackendSetting = Field(
        AUTO,
        description=f"Encoder backend, one of {', '.join(BACKENDS)} (ONNX files exported into cache_dir); "
        f"{AUTO} = the one the index was built with, {NEW_INDEX_BACKEND} for a new index.",
    )
    batch_size: int = Field(32, ge=1, le=1024, description="Encoding batch size.")
    torch_threads: int = Field(
        0,
        ge=0,
        le=256,
        description="Encoder threads per process (torch's, or texts the ONNX backends embed at once); 0 = "
        "the library's default (ONNX: one per core), or cores / workers under serve.",
    )

    # Chunking.
    chunk_tokens: int = Field(
        128, ge=16, description="Target chunk size in model tokens (capped at max_seq_length minus specials)."
    )
    chunk_overlap: int = Field(32, ge=0, description="Overlap between consecutive chunks, in tokens.")

    # Build engine.
    engine: Engine = Field(
        "local", description="`semqa index` engine: local (this process) or ray (Ray Data)."
    )
    ray_address: str = Field(
        "", description="Ray cluster to run on (auto = the one this node joined); empty = a local instance."
    )
    ray_num_gpus: int = Field(0, ge=0, description="GPU actors (one GPU each) for embedding; 0 = CPU actors.")
    ray_workers: int = Field(0, ge=0, description="CPU actors for embedding; 0 = one per CPU of the cluster.")
    ray_shard_chars: int = Field(
        65_536, ge=1, description="Text per Parquet shard of the Ray build, in characters (about)."
    )

    # Index.
    faiss_factory: str = Field(
        "auto",
        description="FAISS index_factory string of the dense base; auto = exact over float16 vectors "
        "(SQfp16) below 50,000 passages, HNSW32 above.",
    )
    ef_search: int = Field(512, ge=1, le=4096, description="HNSW efSearch: candidates explored per question.")
    nprobe: int = Field(32, ge=1, le=65536, description="IVF nprobe: lists searched per question.")
    compact_after: int = Field(
        20_000,
        ge=0,
        description="Passages written since the last compaction that start one automatically; 0 = never.",
    )

    # Retrieval.
    fusion: Fusion = Field("zscore", description="How hybrid mode fuses scores.")
    fusion_alpha: float = Field(
        0.4,
        ge=0.0,
        le=1.0,
        description="Weight of the dense score in the fusion of SEMQA_RANKING=fusion (the model carries its own).",
    )
    highlight_alpha: float = Field(
        0.7, ge=0.0, le=1.0, description="Weight of the dense score in highlights."
    )
    candidates: int = Field(
        50,
        ge=1,
        le=10_000,
        description="Candidates per retriever before fusion (twice that, at least 10 x top_k, grouped by document).",
    )
    ranking: Ranking = Field(
        "model",
        description="Hybrid ranking: the shipped model (fusion + sentence, coverage, feedback) or fusion alone.",
    )

    # Service.
    host: str = Field("127.0.0.1", description="Address to bind.")
    port: int = Field(8000, ge=0, le=65535, description="Port to bind.")
    workers: int = Field(1, ge=1, le=64, description="gunicorn worker processes.")
    # Many, though there are few cores: a write holds its thread while its passages wait their turn in the
    # encoder, so with 4 threads eight writing clients left questions queued behind them for seconds
    # (bench/write_load.py, BENCHMARKS.md "Questions while documents are written"). The encoder still
    # embeds on the worker's share of the cores, and questions take turns in the app (server/admission.py),
    # so more threads do not run more questions at once. A quarter of them may write, half of the rest
    # may wait to, and the other half stays for questions (server/documents.py): 64 lets 16 clients write
    # at once and 24 more wait their turn, with 24 threads left for questions.
    threads: int = Field(64, ge=1, le=256, description="Threads per gunicorn worker.")
    max_question_chars: int = Field(1000, ge=1, description="Longest accepted question, in characters.")
    max_top_k: int = Field(50, ge=1, description="Largest accepted top_k.")
    max_batch_queries: int = Field(20, ge=1, description="Questions per POST /query.")
    max_body_bytes: int = Field(64 * 1024, ge=1024, description="Largest accepted request body, in bytes.")
    max_discard_bytes: int = Field(
        64 * 1024 * 1024,
        ge=0,
        description="Largest request body read and thrown away after an early answer (a 413, 401, ...), so "
        "that clients still sending read the answer; a longer body gets the answer and a closed connection.",
    )
    max_discard_seconds: float = Field(
        10.0, ge=0.0, description="Longest time spent reading and throwing away such a body."
    )
    client_timeout: float = Field(
        10.0,
        gt=0.0,
        description="Seconds a connection may send (or take) nothing in the middle of a request before it is "
        "given up: a stalled body is answered 408, stalled headers get the connection closed.",
    )

    reload_interval: float = Field(
        0.5, ge=0.0, description="Seconds between checks for a newer index version; 0 = never reload."
    )

    # Security and limits of the write API.
    api_keys: str = Field(
        "", description="Comma-separated API keys with the write scope, which may read too (Bearer tokens)."
    )
    read_keys: str = Field("", description="Comma-separated API keys with the read scope only.")
    api_key_file: Path | None = Field(
        None,
        description="File of API keys, one a line: 'write <key>', 'read <key>' or '<key>' (write); '#' comments. "
        "Re-read when it changes.",
    )
    read_requires_key: bool = Field(
        False, description="Reads (/ask, /query, /documents, /metrics, MCP over HTTP) need a key too."
    )
    max_upsert_documents: int = Field(100, ge=1, description="Documents per POST /documents.")
    max_document_chars: int = Field(1_000_000, ge=1, description="Longest accepted document text.")
    max_write_body_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="Largest POST /documents body.")
    write_wait: float = Field(
        30.0,
        gt=0,
        description="Seconds a write waits for a write slot of its worker (when a quarter of its threads write), "
        "or for the writer lock (held by a rebuild), before 503 + Retry-After.",
    )

    rate_limit: str = Field(
        "600 per minute",
        description="Per-client limit on every route together but the probes, metrics, docs, static files and "
        "preflights (flask-limiter syntax); empty = none.",
    )
    write_rate_limit: str = Field(
        "60 per minute",
        description="Per-client limit on writes (upserts and deletes together); empty = none.",
    )

    @field_validator("corpus", "index_dir", "cache_dir", "api_key_file", mode="before")
    @classmethod
    def _a_path(cls, value: object, info: ValidationInfo) -> object:
        """An empty path is refused (or, for the key file, means none): pydantic reads ``SEMQA_INDEX_DIR=``
        as the current directory, so a variable emptied by mistake would build or serve an index wherever
        the command happened to run."""
        if isinstance(value, str) and not value.strip():
            if info.field_name == "api_key_file":
                return None
            raise ValueError("must not be empty: give a path, or unset the variable for the default")
        return value

    @field_validator("rate_limit", "write_rate_limit")
    @classmethod
    def _a_rate_limit(cls, value: str) -> str:
        """Read now, so that a typo stops the start (flask-limiter reads a limit at each request: a bad
        application limit failed every request with a 500, a bad blueprint limit was skipped silently)."""
        if value:
            try:
                parse_many(value)
            except ValueError as exc:
                raise ValueError(
                    f"{exc}; write e.g. '600 per minute', '10/second' or '100 per hour; 10 per second', "
                    "or nothing for no limit"
                ) from None
        return value

    cors_origins: str = Field("", description="Comma-separated origins allowed by CORS; empty = CORS off.")

    slack_signing_secret: str = Field("", description="Slack app signing secret; empty = Slack endpoint off.")

    quiet: bool = Field(False, description="No progress bars.")

    def environment(self) -> dict[str, str]:
        """These settings as ``SEMQA_*`` variables, for a child process to read the same configuration."""
        return {
            f"SEMQA_{name.upper()}": str(value)
            for name, value in self.model_dump().items()
            if value is not None
        }

    @classmethod
    def from_flags(cls, **flags: object) -> Settings:
        """Settings from the environment, with the given flags on top; ``None`` means "flag not given"."""
        return cls(**{k: v for k, v in flags.items() if v is not None})


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """A warning for each ``SEMQA_*`` variable in ``environ`` that names no setting, with the setting it
    most resembles. pydantic ignores such variables, so a typo (``SEMQA_API_KEY`` for ``SEMQA_API_KEYS``)
    would silently serve without keys. Warned, not refused: a platform may set variables of that prefix
    itself (Kubernetes' service links for a service named ``semqa``: ``SEMQA_SERVICE_HOST``...)."""
    known = {f"SEMQA_{name.upper()}" for name in Settings.model_fields}
    warnings = []
    for variable in sorted(environ):
        if variable.upper().startswith("SEMQA_") and variable.upper() not in known:
            close = difflib.get_close_matches(variable.upper(), sorted(known), n=1, cutoff=0.8)
            hint = f"; did you mean {close[0]}?" if close else ""
            warnings.append(f"{variable} is not a semqa setting and is ignored{hint}")
    return warnings
