"""The one typed configuration object, read from IMGSEARCH_* variables and CLI flags.

`Settings` is made of groups, one per part of the system (model, store, index, verdict, serve,
security, log), and each part is handed only its own group: every default is written once,
here. The variables stay flat (`IMGSEARCH_MATCH_THRESHOLD`, not `IMGSEARCH_VERDICT__...`): each
group reads its own fields, and field names are unique across groups, so the documented names
keep working and `Settings(match_threshold=...)` finds its group by itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from imgsearch.backbones import AUTO, BUNDLED_MODEL, NAMES, Contract

__all__ = ["BUNDLED_MODEL"]  # re-exported: tests and scripts name the bundled file from here
BUNDLED_SAMPLES = Path(__file__).parent / "samples"
# Decode limits: also the defaults of `imgsearch.model.preprocess.DecodeLimits`.
MAX_PIXELS = 64_000_000
MIN_SIDE = 16
DECODE_MEMORY = 1536 * 1024 * 1024


def host_port(value: str, *, lowest: int) -> str:
    """`value` if it is HOST:PORT with a port from `lowest` (0: any free one) to 65535."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not lowest <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT with a port from {lowest} to 65535, got {value!r}")
    return value


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "imgsearch"


class WatchMode(StrEnum):
    """How the folder is watched: native kernel events, polling, or native with polling fallback."""

    AUTO = "auto"
    NATIVE = "native"
    POLLING = "polling"


class StoreEngine(StrEnum):
    """The embedded vector engine used when no Qdrant server URL is given."""

    EDGE = "edge"  # qdrant-edge-py: Qdrant's Rust engine in-process (HNSW, quantisation)
    LOCAL = "local"  # qdrant-client local mode: pure Python, brute force, small folders only


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


class _Group(BaseSettings):
    """A group of settings, each field read from IMGSEARCH_<FIELD>."""

    model_config = SettingsConfigDict(env_prefix="IMGSEARCH_", extra="forbid")


class Fit(StrEnum):
    """Which side of an image is resized to the model's input size."""

    LONGER = "longer"
    SHORTER = "shorter"


@dataclass(frozen=True, slots=True)
class Tuning:
    """The defaults measured for one kind of backbone (bench/accuracy): a setting left unset
    takes its value from the serving model's tuning."""

    image_size: int
    fit: Fit
    query_sizes: tuple[int, ...]  # extra, smaller scales a query is described at
    match_threshold: float
    whitened_match_threshold: float
    whitening_min_images: int
    verify_top: int
    # How far down the ranking the check goes when neither look confirms one of the first
    # verify_top (`Ranker._verified`); verify_top or less: no further.
    verify_deep: int
    # What the margin subtracts: this share of the mean score of the query's nearest images.
    background_weight: float
    # Whether photo-like blocks that page furniture sets apart are extra query views beyond a
    # page's (query_boxes): measured for the copy-detection descriptor only.
    layout_blocks: bool


TUNING: dict[Contract, Tuning] = {
    # EfficientNet-Lite0 (an ImageNet classifier): longer side 384, a second query scale for
    # crops, a whitening learned on large folders, keypoint checks when unsure, and a margin
    # over half the query's background (at one false match in 1,000 it keeps half again as
    # many true sources as the raw score).
    Contract.FEATURE_MAP: Tuning(384, Fit.LONGER, (224,), 0.55, 0.54, 1000, 3, 3, 0.5, False),
    # A copy-detection descriptor: one pass at short side 288 (plus the framed view and the
    # photo-like blocks of a page or a screenshot), judged on its raw cosine: the background
    # margin costs it recall (bench/accuracy: 55.7% of sourced queries above the 1-in-1,000
    # line with it, 64.5% without). The threshold lets at most 1 in 1,000 no-source queries
    # through on bench/accuracy (0.820: piles of grain resemble each other that much),
    # rounded up; keypoint checks below it, down to the 10th candidate where the first three
    # confirm nothing (a fifth of a star field ranks its source among look-alikes).
    Contract.EMBEDDING: Tuning(288, Fit.SHORTER, (), 0.83, 0.83, 0, 3, 10, 0.0, True),
}


class ModelSettings(_Group):
    """The backbone and how images are fed to it."""

    model: str = Field(
        AUTO,
        description=f"Backbone: {', '.join(NAMES)}, a path to an ONNX file, or auto (the first "
        "of them that is installed).",
    )
    image_size: int | None = Field(
        None, ge=64, le=2048, description="Side fed to the model; unset = the model's own."
    )
    query_sizes: list[int] | None = Field(
        None, description="Extra, smaller sizes a query is also described at; unset = the model's."
    )
    max_pixels: int = Field(MAX_PIXELS, ge=1, description="Largest decoded image accepted.")
    min_side: int = Field(MIN_SIDE, ge=1, description="Smallest width or height accepted.")
    decode_memory_bytes: int = Field(
        DECODE_MEMORY,
        ge=64 * 1024 * 1024,
        description="Memory all image decodes of the process may hold at once (they wait their "
        "turn; one image needing more is refused).",
    )
    inference_threads: int = Field(
        2,
        ge=1,
        description="Cores the model runs on: a query alone uses all of them, concurrent "
        "queries one each (never more at once); the indexing workers split them.",
    )


DEFAULT_COLLECTION = "images"


class StoreSettings(_Group):
    """Where the vectors live: the embedded engine under data_dir, or a Qdrant server."""

    data_dir: Path = Field(default_factory=_default_data_dir, description="Embedded index dir.")
    qdrant_url: str | None = Field(None, description="Qdrant server URL; unset = embedded.")
    qdrant_api_key: str | None = None
    engine: StoreEngine = Field(
        StoreEngine.EDGE, description="Embedded engine when qdrant_url is unset: edge or local."
    )
    collection: str | None = Field(
        None,
        description="Qdrant collection name; unset = images on a server, and in an embedded "
        "index one per model (images-<model key>).",
    )

    graph_min_scanned: int = Field(
        20_000,
        ge=0,
        description="Embedded index: build the search graph in the background (another "
        "process, low priority) once this many vectors are scanned instead; 0 = only "
        "`imgsearch optimize`.",
    )
    graph_check_seconds: float = Field(
        30.0, gt=0.0, description="How often the embedded index checks whether a build is due."
    )

    @property
    def embedded_store_path(self) -> Path:
        """qdrant-client local mode's folder (engine `local`)."""
        return self.data_dir / "qdrant"

    @property
    def edge_store_path(self) -> Path:
        """qdrant-edge's folder (engine `edge`): its own, the two engines' files differ."""
        return self.data_dir / "edge"

    @property
    def engine_store_path(self) -> Path:
        """The folder of the embedded engine in use."""
        return self.edge_store_path if self.engine is StoreEngine.EDGE else self.embedded_store_path


class IndexSettings(_Group):
    """What is indexed and how the folder is kept in step."""

    folder: Path | None = Field(None, description="Folder to watch (default: bundled samples).")
    regions: bool = Field(
        False,
        description="Also index 13 regional vectors per image: a few points better on small "
        "crops (bench/results/probe), 14x the points and memory; embedded searches scan them "
        "(~90 ms at 10k images), so large folders want a Qdrant server.",
    )
    batch_size: int = Field(16, ge=1, le=512, description="Files looked at and written at once.")
    embed_workers: int = Field(
        2, ge=1, le=64, description="Parallel embedding workers (one onnxruntime thread each)."
    )
    nice: int = Field(
        10,
        ge=0,
        le=19,
        description="How much lower than searches the indexing threads and the duplicate "
        "finder's run (Linux nice, per thread; 0 = the same): a large indexing run or a "
        "duplicates search leaves the cores to searches first.",
    )
    settle_seconds: float = Field(0.5, ge=0.0, description="Quiet time before a file is read.")
    watch_mode: WatchMode = Field(
        WatchMode.AUTO, description="native events, polling, or native with polling fallback."
    )
    poll_interval: float = Field(1.0, gt=0.0)
    rescan_interval: float = Field(600.0, ge=0.0, description="Full reconcile period; 0 = never.")
    mass_delete_fraction: float = Field(
        0.5, ge=0.0, le=1.0, description="A scan removing more of the index than this waits."
    )
    max_file_bytes: int = Field(256 * 1024 * 1024, ge=1, description="Larger files are skipped.")
    min_free_disk_bytes: int = Field(
        512 * 1024 * 1024,
        ge=0,
        description="Indexing waits while the embedded index's disk has less free; 0 = never.",
    )


class VerdictSettings(_Group):
    """How many results, and when one is called "the source"."""

    default_limit: int = Field(10, ge=1)
    max_limit: int = Field(100, ge=1)
    # Unset: the serving model's Tuning, calibrated on bench/accuracy so that at most 1 in
    # 1,000 no-source queries is called a match.
    match_threshold: float | None = Field(
        None,
        ge=-2.0,
        le=2.0,
        description="Margin (the score, less a model-set share of the mean of the 10 best "
        "scores: none for a copy-detection model) that means 'the source' without a geometric "
        "check, for raw scores; unset = the model's.",
    )
    whitened_match_threshold: float | None = Field(
        None,
        ge=-2.0,
        le=2.0,
        description="match_threshold for whitened scores; unset = the model's.",
    )
    whitening_min_images: int | None = Field(
        None,
        ge=0,
        description="Folders with at least this many images are searched with a PCA whitening "
        "learned on their own descriptors; 0 = never; unset = the model's.",
    )
    whitening_dims: int = Field(1024, ge=2, description="Dimensions the whitening keeps.")
    whitening_sample: int = Field(
        10_000, ge=2, description="Most images the whitening is learned from."
    )
    verify_top: int | None = Field(
        None,
        ge=0,
        description="Candidates checked geometrically when the score is unsure; 0 = off; "
        "unset = the model's.",
    )
    verify_deep: int | None = Field(
        None,
        ge=0,
        description="How far down the ranking the check goes when neither of its looks "
        "confirms one of the first verify_top; verify_top or less = no further; unset = the "
        "model's.",
    )
    min_inliers: int = Field(15, ge=4, description="Geometric matches that confirm a source.")

    def for_model(self, tuning: Tuning) -> Verdict:
        """These settings with the unset ones taken from the serving model's tuning."""

        def pick(value: float | None, tuned: float) -> float:
            return tuned if value is None else value

        return Verdict(
            default_limit=self.default_limit,
            max_limit=self.max_limit,
            match_threshold=pick(self.match_threshold, tuning.match_threshold),
            whitened_match_threshold=pick(
                self.whitened_match_threshold, tuning.whitened_match_threshold
            ),
            whitening_min_images=int(pick(self.whitening_min_images, tuning.whitening_min_images)),
            whitening_dims=self.whitening_dims,
            whitening_sample=self.whitening_sample,
            verify_top=int(pick(self.verify_top, tuning.verify_top)),
            verify_deep=int(pick(self.verify_deep, tuning.verify_deep)),
            min_inliers=self.min_inliers,
            background_weight=tuning.background_weight,
            chosen=frozenset(self.model_fields_set),
        )


@dataclass(frozen=True, slots=True)
class Verdict:
    """VerdictSettings resolved for the serving model: what the ranker judges with."""

    default_limit: int
    max_limit: int
    match_threshold: float
    whitened_match_threshold: float
    whitening_min_images: int
    whitening_dims: int
    whitening_sample: int
    verify_top: int
    verify_deep: int
    min_inliers: int
    background_weight: float  # the model's (Tuning.background_weight)
    chosen: frozenset[str] = frozenset()  # the fields set explicitly (not from the tuning)


class ServeSettings(_Group):
    """The gRPC server and the metrics endpoint."""

    listen: str = Field("127.0.0.1:50051", description="gRPC address (HOST:PORT).")
    metrics_listen: str | None = Field("127.0.0.1:9464", description="HOST:PORT for /metrics.")
    http_listen: str | None = Field(
        "127.0.0.1:8080",
        description="HOST:PORT for the web page and the HTTP/JSON API ('' for none).",
    )
    max_request_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    grace_seconds: float = Field(5.0, ge=0)
    health_interval: float = Field(2.0, gt=0, description="Seconds between store health checks.")
    max_concurrent_rpcs: int = Field(64, ge=1, description="More are refused: RESOURCE_EXHAUSTED.")
    message_wait_seconds: float = Field(
        30.0,
        gt=0,
        description="A call whose request message has not arrived this long after its headers "
        "is ended with DEADLINE_EXCEEDED.",
    )
    max_connections: int = Field(
        512,
        ge=1,
        description="Client connections held at once (more wait to be accepted); one that has "
        "not completed its handshake within 10 s is closed.",
    )

    @field_validator("listen", "metrics_listen", "http_listen")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        return None if value in (None, "") else host_port(value, lowest=0)


class SecuritySettings(_Group):
    """TLS and tokens, for both services (see README "Security")."""

    tls_cert: Path | None = Field(None, description="Server certificate (PEM): enables TLS.")
    tls_key: Path | None = Field(None, description="Server private key (PEM).")
    tls_client_ca: Path | None = Field(None, description="CA for client certificates: mTLS.")
    auth_token: SecretStr | None = Field(None, description="Bearer token every RPC needs.")
    admin_token: SecretStr | None = Field(None, description="Bearer token write RPCs need.")
    write_rpcs: bool = Field(True, description="False refuses write RPCs (Rescan).")

    @model_validator(mode="after")
    def _tls_pair(self) -> SecuritySettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("tls_client_ca (mutual TLS) needs tls_cert and tls_key")
        return self


class LogSettings(_Group):
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR.")
    log_format: LogFormat = Field(LogFormat.TEXT, description="text, or json (one object a line).")


_GROUPS: dict[str, type[_Group]] = {
    "encoder": ModelSettings,
    "store": StoreSettings,
    "index": IndexSettings,
    "verdict": VerdictSettings,
    "serve": ServeSettings,
    "security": SecuritySettings,
    "log": LogSettings,
}
# Which group each field (and IMGSEARCH_<FIELD> variable) belongs to.
GROUP_OF_FIELD = {field: group for group, kind in _GROUPS.items() for field in kind.model_fields}


def field_help(model: type[BaseSettings], name: str) -> str:
    """A flag's help: the field's description, its default and its variable."""
    info = model.model_fields[name]
    default = info.get_default(call_default_factory=True)
    shown = "unset" if default in (None, "") else getattr(default, "value", default)
    description = (info.description or "").rstrip(".")
    return f"{description} (default: {shown}; IMGSEARCH_{name.upper()})"


def setting_help(name: str) -> str:
    """`field_help` of a server setting, found in its group."""
    return field_help(_GROUPS[GROUP_OF_FIELD[name]], name)


class Settings(BaseModel):
    """Everything a process of imgsearch can be told; CLI flags override environment variables.

    Built with flat field names (`Settings(folder=..., match_threshold=...)`): each group is
    made from its own fields and reads the rest from the environment.
    """

    model_config = {"frozen": True}

    encoder: ModelSettings = Field(default_factory=ModelSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    index: IndexSettings = Field(default_factory=IndexSettings)
    verdict: VerdictSettings = Field(default_factory=VerdictSettings)
    serve: ServeSettings = Field(default_factory=ServeSettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    log: LogSettings = Field(default_factory=LogSettings)

    @model_validator(mode="before")
    @classmethod
    def _group_flat_fields(cls, values: Any) -> Any:  # noqa: ANN401 - pydantic's raw input
        if not isinstance(values, dict):
            return values
        unknown = sorted(k for k in values if k not in GROUP_OF_FIELD and k not in _GROUPS)
        if unknown:
            raise ValueError(f"unknown settings: {', '.join(unknown)}")
        grouped: dict[str, Any] = {k: v for k, v in values.items() if k in _GROUPS}
        for name, kind in _GROUPS.items():
            if name not in grouped:
                own = {k: v for k, v in values.items() if GROUP_OF_FIELD.get(k) == name}
                grouped[name] = kind(**own)
        return grouped

    @property
    def watched_folder(self) -> Path:
        """The folder to index: the configured one, or a writable copy of the bundled samples."""
        return (self.index.folder or self.store.data_dir / "samples").expanduser().resolve()


class ClientSettings(BaseSettings):
    """How the `search`, `status` and `rescan` commands reach a server."""

    model_config = SettingsConfigDict(env_prefix="IMGSEARCH_")

    server: str = Field("127.0.0.1:50051", description="Server address (HOST:PORT).")
    token: SecretStr | None = Field(None, description="Bearer token (IMGSEARCH_TOKEN only).")
    tls: bool = Field(False, description="Use TLS.")
    tls_ca: Path | None = Field(None, description="CA that signed the server certificate.")
    tls_cert: Path | None = Field(None, description="Client certificate (mTLS).")
    tls_key: Path | None = Field(None, description="Client private key (mTLS).")
    timeout: float = Field(30.0, gt=0, description="Seconds a call may take.")

    @field_validator("server")
    @classmethod
    def _host_port(cls, value: str) -> str:
        return host_port(value, lowest=1)
