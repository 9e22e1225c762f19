"""Every setting of the OpenAI shim, declared once: env var, CLI flag, default, one-line doc.

Precedence: flag > environment > default. ``Settings`` is a frozen pydantic-settings model,
validated when built, so a bad value stops the server at start with a message naming the
setting, never later in a request. ``Settings(...)`` takes the values it is given (and the
defaults); :meth:`Settings.load` adds the ``VLT_*`` environment and the command-line flags.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from openai_frontend.media.netpolicy import parse_allow_rules, parse_domains
from openai_frontend.tools import check_settings as check_tool_settings

ENV_PREFIX = "VLT_"

_MIB = 1024 * 1024
# Settings where 0 means "off" rather than a mistake.
_ZERO_OK = {"files_ttl_s", "max_context_tokens", "videos_ttl_s", "fetch_retries", "triton_retries"}


def _setting(default: Any, doc: str) -> Any:
    return Field(default=default, description=doc)


class Settings(BaseSettings):
    """What the shim needs to serve; see :data:`DOCS` or ``python -m openai_frontend --help``."""

    # Unknown names are mistakes; env_ignore_empty: VLT_X= is the same as not setting VLT_X.
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_ignore_empty=True, frozen=True, extra="forbid",
                                      protected_namespaces=())

    host: str = _setting("127.0.0.1", "address the OpenAI-compatible HTTP server binds")
    port: int = _setting(8080, "port of the OpenAI-compatible HTTP server")
    triton_url: str = _setting(
        "", "gRPC host:port of a running tritonserver, or several comma-separated (health-checked; a video "
        "stays on one by its content hash); empty: the launcher starts one on free loopback ports"
    )
    model_repository: str = _setting("model_repository", "Triton model repository the launcher serves")
    served_model_name: str = _setting(
        "", "model name clients use; empty: served_model_name (else model) of <model_repository>/llm/1/model.json"
    )
    max_videos: int = _setting(4, "most videos one request may carry (all messages together)")
    max_images: int = _setting(4, "most images one request may carry (all messages together)")
    max_media_bytes: int = _setting(512 * _MIB, "most bytes of one video or image (data URL, download or file)")
    max_body_bytes: int = _setting(1024 * _MIB, "most bytes of one request body")
    max_jpeg_frames: int = _setting(768, "most frames in one data:video/jpeg frame list")
    # --- media safety (README "Safety and limits"); every default is the safe choice ---
    allowed_media_schemes: str = _setting("http,https", "network schemes media URLs may use (http, https)")
    allowed_media_domains: str = _setting(
        "", "host names media URLs may name, comma-separated (name exactly, *.name any below it); empty: any"
    )
    allowed_media_networks: str = _setting(
        "", "private/loopback/link-local/... networks media URLs may reach anyway, comma-separated CIDRs, "
        "optionally with a port (10.0.0.0/8, 127.0.0.1:8000, [::1]:8000); empty: none"
    )
    follow_redirects: bool = _setting(False, "follow http(s) redirects of media URLs (each hop checked again)")
    max_redirects: int = _setting(5, "most redirects one media download follows (with --follow-redirects)")
    fetch_connect_timeout_s: float = _setting(10.0, "timeout of resolving and connecting to a media host")
    fetch_timeout_s: float = _setting(30.0, "timeout of each read while downloading http(s) media")
    fetch_total_timeout_s: float = _setting(120.0, "timeout of one whole media download, redirects and waiting included")
    fetch_retries: int = _setting(
        2, "times a media download is tried again when the server answers 5xx/408/429 or the connection fails "
        "before the body (within fetch_total_timeout_s); 0: never"
    )
    retry_backoff_s: float = _setting(
        0.5, "first wait before a retry (media downloads, tritonserver unavailable); doubled each time, "
        "jittered, at most 5 s, at least a server's Retry-After"
    )
    fetch_concurrency: int = _setting(32, "most media downloads this server runs at once (all requests)")
    fetch_concurrency_per_request: int = _setting(4, "most media downloads one request runs at once")
    fetch_concurrency_per_host: int = _setting(4, "most media downloads at once from one media host")
    max_request_media_bytes: int = _setting(1024 * _MIB, "most bytes of all media of one request together")
    max_frame_pixels: int = _setting(
        8192 * 4320, "most pixels of one video frame or image (its declared size, checked before decoding)"
    )
    max_video_frames: int = _setting(2048, "most frames sampled from one video (num_frames, max_frames, frame lists)")
    max_video_duration_s: float = _setting(4 * 3600.0, "longest video, in seconds (its declared duration)")
    max_audios: int = _setting(4, "most audio parts one request may carry (all messages together)")
    max_audio_bytes: int = _setting(64 * _MIB, "most bytes of one audio part (data, download or file)")
    max_audio_duration_s: float = _setting(600.0, "longest audio part, in seconds (its declared duration)")
    max_decoded_bytes: int = _setting(
        2048 * _MIB, "most bytes of RGB frames the shim decodes for one frame list (stills at full size)"
    )
    max_context_tokens: int = _setting(
        0, "the model's context, for refusing videos that cannot fit before decoding them; "
        "0: max_model_len of <model_repository>/llm/1/model.json (no check without one)"
    )
    allowed_local_media_path: str = _setting(
        "", "directory file:// URLs and bare paths may read from (symlinks resolved); empty: both refused"
    )
    triton_grpc_port: int = _setting(0, "loopback gRPC port of the tritonserver the launcher starts; 0: a free one")
    triton_http_port: int = _setting(0, "loopback HTTP port of the tritonserver the launcher starts; 0: a free one")
    triton_metrics_port: int = _setting(0, "loopback metrics port of the tritonserver the launcher starts; 0: a free one")
    triton_log_file: str = _setting("", "where the launcher writes tritonserver's log; empty: a temporary file")
    triton_timeout_s: float = _setting(600.0, "timeout of one media inference in tritonserver")
    triton_retries: int = _setting(
        2, "times a generation tritonserver refused as unavailable before answering anything is tried again; "
        "0: never"
    )
    triton_files_dir: str = _setting(
        "", "where tritonserver's video_decoder sees files_dir (its media_root or below): uploaded videos then go "
        "to it by path, not by bytes over gRPC; empty: bytes (the launcher sets both when it starts tritonserver)"
    )
    files_dir: str = _setting(".cache/files", "directory of the Files API's embedded store (blobs + SQLite metadata)")
    max_upload_bytes: int = _setting(1024 * _MIB, "most bytes of one POST /v1/files upload (enforced while streaming)")
    files_quota_bytes: int = _setting(20 * 1024 * _MIB, "most bytes the file store keeps; least recently used go first")
    files_ttl_s: int = _setting(0, "seconds an uploaded file lives unless expires_after says otherwise; 0: forever")
    files_scope_header: str = _setting(
        "", "request header naming the tenant whose files a request sees (others get 404); empty: one shared scope"
    )
    files_sweep_s: float = _setting(60.0, "seconds between sweeps of expired files (and expired video jobs)")
    # --- several replicas (README "Several replicas: S3 and PostgreSQL") ---
    database_url: str = _setting(
        "", "postgresql://user@host:port/db keeping file records and video jobs for every replica; "
        "empty: SQLite in files_dir (one process)"
    )
    files_backend: str = _setting("local", "where uploaded bytes and finished videos live: local (files_dir) or s3")
    s3_bucket: str = _setting("", "bucket of files_backend=s3 (credentials: the usual AWS_* environment variables)")
    s3_prefix: str = _setting("", "key prefix inside s3_bucket, e.g. vlt/ (one bucket, several deployments)")
    s3_endpoint_url: str = _setting("", "S3-compatible endpoint (MinIO, Ceph, ...); empty: AWS's")
    s3_region: str = _setting("", "region of s3_bucket; empty: AWS_REGION / AWS_DEFAULT_REGION")
    s3_part_bytes: int = _setting(16 * _MIB, "part size of multipart uploads to S3 (at least 5 MiB)")
    s3_cache_bytes: int = _setting(
        10 * 1024 * _MIB, "most bytes of the local copies of S3 blobs the decoder reads (files_dir/s3-cache)"
    )
    videos_concurrency: int = _setting(1, "video generations run at once (jobs and /v1/videos/sync); more wait")
    videos_max_queued: int = _setting(64, "most video generations waiting to run; more are refused with 429")
    videos_ttl_s: int = _setting(86400, "seconds a finished video job and its mp4 are kept; 0: forever")
    videos_cancel_timeout_s: float = _setting(
        10.0, "most seconds DELETE /v1/videos/{id} waits for a running generation to stop"
    )
    videos_lease_s: float = _setting(
        30.0, "seconds a replica's claim on a running video job lasts unless renewed (database_url only)"
    )
    # --- tool calling (README "Tools"): vLLM's --tool-call-parser and --enable-auto-tool-choice ---
    tool_call_parser: str = _setting(
        "", "vLLM tool parser of the served model's tool calls (hermes for Qwen); the llm model runs it on the "
        "output; empty: none (tool_choice required and named functions still work, through a JSON grammar)"
    )
    enable_auto_tool_choice: bool = _setting(
        False, "let the model choose whether to call tools (tool_choice auto, the default with tools); needs "
        "tool_call_parser"
    )
    log_level: str = _setting("info", "log level of the shim (debug, info, warning, error)")
    log_format: str = _setting(
        "text", "log lines of the shim and the Triton models it starts: text or json (one object per line)"
    )
    playground: bool = _setting(False, "serve the web playground (upload or link a video, ask, generate) at /playground")

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ValueError(_describe(exc)) from None

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The values given, nothing else: the environment is read by load() alone (from the mapping it gets).
        return (init_settings,)

    @model_validator(mode="after")
    def _check(self) -> Settings:
        for name, info in type(self).model_fields.items():
            value = getattr(self, name)
            if name.endswith("port"):
                if not 0 <= value < 65536:
                    raise ValueError(f"setting {name} must be 0..65535, got {value}")
            elif info.annotation in (int, float) and not (value > 0 or (name in _ZERO_OK and value == 0)):
                raise ValueError(f"setting {name} must be positive, got {value!r}")
        if self.log_level.lower() not in ("debug", "info", "warning", "error", "critical"):
            raise ValueError(f"setting log_level must be debug|info|warning|error, got {self.log_level!r}")
        if self.log_format not in ("text", "json"):
            raise ValueError(f"setting log_format must be text|json, got {self.log_format!r}")
        for name, parse in (("allowed_media_networks", parse_allow_rules), ("allowed_media_domains", parse_domains)):
            try:
                parse(getattr(self, name))
            except ValueError as exc:
                raise ValueError(f"setting {name}: {exc}") from None
        schemes = {x.strip() for x in self.allowed_media_schemes.split(",") if x.strip()}
        if not schemes <= {"http", "https"}:
            raise ValueError(f"setting allowed_media_schemes takes http and/or https, got {self.allowed_media_schemes!r}")
        if self.allowed_local_media_path and not Path(self.allowed_local_media_path).is_dir():
            raise ValueError(f"setting allowed_local_media_path is not a directory: {self.allowed_local_media_path}")
        parse_triton_urls(self.triton_url)
        check_tool_settings(self.tool_call_parser, self.enable_auto_tool_choice)
        self._check_stores()
        return self

    def _check_stores(self) -> None:
        if self.files_backend not in ("local", "s3"):
            raise ValueError(f"setting files_backend must be local or s3, got {self.files_backend!r}")
        s3 = [n for n in ("s3_bucket", "s3_prefix", "s3_endpoint_url", "s3_region") if getattr(self, n)]
        if self.files_backend == "s3" and not self.s3_bucket:
            raise ValueError("setting s3_bucket is required with files_backend=s3")
        if self.files_backend == "local" and s3:
            raise ValueError(f"setting {s3[0]} is set but files_backend is local (set files_backend=s3)")
        if self.s3_endpoint_url and not self.s3_endpoint_url.startswith(("http://", "https://")):
            raise ValueError(f"setting s3_endpoint_url must be an http(s) URL, got {self.s3_endpoint_url!r}")
        if self.s3_prefix and not self.s3_prefix.endswith("/"):
            raise ValueError(f"setting s3_prefix must end with /, got {self.s3_prefix!r}")
        if self.s3_part_bytes < 5 * _MIB:
            raise ValueError(f"setting s3_part_bytes must be at least 5 MiB (S3's minimum), got {self.s3_part_bytes}")
        if self.database_url and not self.database_url.startswith(("postgresql://", "postgres://")):
            raise ValueError("setting database_url must be a postgresql:// URL")

    @property
    def triton_urls(self) -> tuple[str, ...]:
        """The gRPC endpoints of ``triton_url``, in order (empty: the launcher starts one)."""
        return parse_triton_urls(self.triton_url)

    @property
    def model_name(self) -> str:
        """The name /v1/models lists and requests must use."""
        return self.served_model_name or served_model_name_from(Path(self.model_repository))

    @classmethod
    def load(cls, argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
        """Defaults, overridden by ``VLT_*`` variables of ``environ`` (default: the process's
        environment), overridden by flags in ``argv``."""
        values = _EnvironSource(cls, os.environ if environ is None else environ)()
        args = build_parser().parse_args(list(argv) if argv is not None else [])
        values.update({name: value for name, value in vars(args).items() if value is not None})
        return cls(**values)

    def with_(self, **changes: Any) -> Settings:
        """A copy with ``changes``, validated again."""
        return type(self)(**{**self.model_dump(), **changes})


class _EnvironSource(EnvSettingsSource):
    """pydantic-settings' environment source, over a given mapping instead of ``os.environ``."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        # the one hook that reads os.environ; names matched case-insensitively, empty values unset
        return {key.lower(): value for key, value in self._environ.items() if value != ""}


def _describe(exc: ValidationError) -> str:
    """A ValidationError as one clause per problem, each naming the setting (and its env var and flag)."""
    lines = []
    for err in exc.errors():
        if err["type"] == "value_error" and not err["loc"]:  # our own checks: their message as written
            lines.append(str(err["ctx"]["error"]))
            continue
        name = str(err["loc"][0]) if err["loc"] else "?"
        where = f" ({env_name(name)}, {flag_name(name)})" if name in Settings.model_fields else ""
        got = f", got {err['input']!r}" if err["type"] != "extra_forbidden" else " (no such setting)"
        lines.append(f"setting {name}{where}: {err['msg']}{got}")
    return "; ".join(lines)


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


#: setting -> (env var, flag, default, doc), for documentation and --help.
DOCS: dict[str, tuple[str, str, Any, str]] = {
    name: (env_name(name), flag_name(name), info.default, info.description or "")
    for name, info in Settings.model_fields.items()
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m openai_frontend",
        description="Start tritonserver (unless --triton-url is given) and the OpenAI-compatible shim.",
    )
    for name, info in Settings.model_fields.items():
        env, flag, default, doc = DOCS[name]
        help_ = f"{doc} (env {env}, default {default!r})"
        if info.annotation is bool:
            p.add_argument(flag, dest=name, default=None, action=argparse.BooleanOptionalAction, help=help_)
        else:
            kind = info.annotation if info.annotation in (int, float) else str
            p.add_argument(flag, dest=name, default=None, type=kind, help=help_)
    return p


_HOST = re.compile(r"\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+")


def parse_triton_urls(raw: str) -> tuple[str, ...]:
    """``host:port[,host:port...]`` as a tuple of endpoints; ValueError naming triton_url when an entry
    is empty, has a scheme or path, or lacks a valid port, or when one endpoint is listed twice."""
    if raw == "":
        return ()
    urls: list[str] = []
    for entry in (x.strip() for x in raw.split(",")):
        if not entry:
            raise ValueError(f"setting triton_url has an empty entry: {raw!r} (host:port,host:port,...)")
        host, sep, port = entry.rpartition(":")
        if not sep or not _HOST.fullmatch(host) or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"setting triton_url: {entry!r} is not a gRPC host:port (no scheme, a port 1..65535)")
        if entry in urls:
            raise ValueError(f"setting triton_url lists {entry!r} twice")
        urls.append(entry)
    return tuple(urls)


def served_model_name_from(model_repository: Path) -> str:
    """``served_model_name`` (else ``model``) of the llm model's engine args; "llm" without them."""
    path = model_repository / "llm" / "1" / "model.json"
    try:
        args = json.loads(path.read_text())
    except (OSError, ValueError):
        return "llm"
    name = args.get("served_model_name") or args.get("model") or "llm"
    if isinstance(name, list):  # vLLM accepts a list; the first name is the one it reports
        name = name[0] if name else "llm"
    return str(name)
