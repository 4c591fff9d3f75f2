"""Every setting of the service, read from `DEEPSEEK_*` environment variables (listed in docs/configuration.md)."""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
from enum import Enum
from pathlib import Path
from typing import Literal, Mapping, Union
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from typing_extensions import Annotated

from dsocr.catalogue import ALL_MODE_NAMES, DEFAULT_PROMPT

ENV_PREFIX = "DEEPSEEK_"
# `DEEPSEEK_OCR_*` variables that are read elsewhere than here, so not typos of a setting: the demo checkpoint's
# folder (dsocr.demo), and the command-line client's server and key.
OTHER_VARIABLES = frozenset({"DEEPSEEK_OCR_DEMO_DIR", "DEEPSEEK_OCR_SERVER", "DEEPSEEK_OCR_API_KEY"})
# Sizes in MB are turned into bytes as integers; a cap far above any disk keeps that conversion finite.
MAX_MB = 1024**3  # a pebibyte
IMAGE_PLACEHOLDER = "<image>"
# Host names as DNS labels write them, with the underscores of container and compose service names.
HOSTNAME = re.compile(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*\.?")
DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_TEMPERATURE = 2.0


class AttnImpl(str, Enum):
    flash_attention_2 = "flash_attention_2"
    sdpa = "sdpa"
    eager = "eager"


class DeviceChoice(str, Enum):
    auto = "auto"
    cuda = "cuda"
    cpu = "cpu"
    mps = "mps"


class DtypeChoice(str, Enum):
    auto = "auto"
    bfloat16 = "bfloat16"
    float16 = "float16"
    float32 = "float32"


class LogFormat(str, Enum):
    text = "text"
    json = "json"


class LogLevel(str, Enum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


class EngineChoice(str, Enum):
    auto = "auto"
    transformers = "transformers"
    remote_code = "remote-code"
    vllm = "vllm"


class Settings(BaseSettings):
    """Field `x` is read from `DEEPSEEK_X` (case-insensitive)."""

    # No number may be inf or nan: "inf" parses as a float, and then every size or wait computed from it fails.
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, case_sensitive=False, extra="ignore", allow_inf_nan=False)

    # The seed's variables.
    ocr_model_path: str = Field("../../ocr_project/model", min_length=1)
    attn_impl: AttnImpl = AttnImpl.flash_attention_2
    allowed_origins: Annotated[list[str], NoDecode] = ["*"]
    ocr_api_keys: Annotated[list[str], NoDecode] = Field([], repr=False)
    ocr_api_keys_file: str = ""
    max_image_mb: float = Field(15, gt=0, le=MAX_MB)
    ocr_default_prompt: str = Field(DEFAULT_PROMPT, min_length=1)
    ocr_runs_dir: Path = Path("runs")

    # Where and how the model runs.
    ocr_engine: EngineChoice = EngineChoice.auto
    ocr_device: DeviceChoice = DeviceChoice.auto
    ocr_dtype: DtypeChoice = DtypeChoice.auto
    ocr_max_new_tokens: int = Field(8192, ge=1)
    ocr_default_mode: str = Field("gundam", min_length=1)

    # Serving through vLLM servers (DEEPSEEK_OCR_ENGINE=vllm): nothing loads in this process.
    ocr_vllm_urls: Annotated[list[str], NoDecode] = []
    ocr_vllm_model: str = ""  # empty: what the first server's /v1/models lists
    ocr_vllm_api_key: str = Field("", repr=False)
    ocr_vllm_max_inflight: int = Field(32, ge=1)
    ocr_vllm_probe_interval_s: float = Field(5, gt=0)
    ocr_vllm_first_byte_timeout_s: float = Field(60, gt=0)  # a server's answer's head, per page

    # Request guardrails.
    ocr_max_prompt_chars: int = Field(4000, ge=1)
    ocr_max_prompt_tokens: int = Field(512, ge=1)
    ocr_max_image_pixels: int = Field(50_000_000, ge=1)

    # PDFs: upstream renders pages at 144 DPI.
    ocr_pdf_dpi: float = Field(144, gt=0, le=1200)
    ocr_max_pdf_pages: int = Field(50, ge=1)
    # Rendering (and, in front of vLLM, decoding uploads and making previews) runs in worker processes, killed past a
    # page's time budget; "auto" follows the cores in front of vLLM (Settings.pdf_worker_count).
    ocr_pdf_workers: Union[int, Literal["auto"]] = "auto"
    ocr_pdf_page_timeout_s: float = Field(20, gt=0)

    # Batching and overload (Triton's dynamic batcher knobs).
    ocr_max_batch_size: int = Field(8, ge=1)
    ocr_batch_wait_ms: float = Field(10, ge=0)
    ocr_max_queue: int = Field(64, ge=1)
    ocr_max_queue_pages: int = Field(256, ge=1)
    ocr_request_timeout_s: float = Field(600, gt=0)
    ocr_upload_timeout_s: float = Field(60, gt=0)
    ocr_upload_min_kib_s: float = Field(64, gt=0)
    ocr_shutdown_grace_s: float = Field(30, ge=0)
    # Connections, under `--http dsocr.api.connections:GuardedH11Protocol`: at most this many open, and a request
    # head must arrive within this many seconds of its first byte (or of the connection).
    ocr_max_connections: int = Field(1000, ge=1)
    ocr_header_timeout_s: float = Field(10, gt=0)

    # Repetition guard: upstream's image setting, n-gram 30 within the last 90 tokens; 0 disables.
    ocr_ngram_size: int = Field(30, ge=0)
    ocr_ngram_window: int = Field(90, ge=0)
    # Pages that loop are read again, sampling at these temperatures in turn (olmOCR's ladder); 0 retries: off.
    ocr_page_retries: int = Field(2, ge=0, le=10)
    ocr_retry_temperatures: Annotated[list[float], NoDecode] = [0.2, 0.5]

    # Artifacts of finished runs (figure crops, annotated pages).
    ocr_run_ttl_s: float = Field(3600, ge=0)
    ocr_runs_max_mb: float = Field(1024, ge=0, le=MAX_MB)

    # What the web frontend shows: page previews in the answer, and a history of finished results.
    ocr_page_previews: bool = True
    ocr_history: bool = True
    ocr_history_dir: Path = Path("history")
    ocr_history_max: int = Field(500, ge=1)
    ocr_history_ttl_s: float = Field(604800, gt=0)  # a week
    ocr_history_max_mb: float = Field(2048, gt=0, le=MAX_MB)
    ocr_history_total_mb: float = Field(8192, gt=0, le=MAX_MB)  # all keys together

    # Operating it: the page at /, the path prefix behind a proxy, logs, stream keep-alives.
    ocr_ui: bool = True
    ocr_root_path: str = ""
    ocr_log_format: LogFormat = LogFormat.text
    ocr_log_level: LogLevel = LogLevel.info
    ocr_log_probes: bool = False
    ocr_sse_ping_s: float = Field(15, gt=0)

    # Durable jobs, and the database that holds them, the history and the progress tasks.
    ocr_data_dir: Path = Path("data")
    ocr_database_url: str = Field("", repr=False)  # empty: a SQLite file in ocr_data_dir
    ocr_job_worker: bool = True  # this process works on jobs (False: it only serves HTTP)
    ocr_job_concurrency: int = Field(0, ge=0)  # pages one process reads at once; 0: what its model takes
    ocr_max_job_files: int = Field(20, ge=1)
    ocr_max_queued_job_pages: int = Field(10000, ge=1)
    ocr_job_lease_s: float = Field(60, gt=0, le=86400)
    ocr_page_attempts: int = Field(3, ge=1)
    ocr_job_ttl_s: float = Field(86400, gt=0, le=10 * 365 * 86400)  # a day
    ocr_jobs_max_mb: float = Field(10240, gt=0, le=MAX_MB)
    ocr_replica_id: str = ""  # empty: the host name; a restarted replica takes back its pages at once
    ocr_webhook_hosts: Annotated[list[str], NoDecode] = []
    ocr_webhook_secret: str = Field("", repr=False)

    @field_validator("allowed_origins", "ocr_vllm_urls", "ocr_api_keys", "ocr_webhook_hosts", "ocr_retry_temperatures",
                     mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            items = [item.strip() for item in value.split(",") if item.strip()]
            # " , ," is a mistake, not "none": for the keys it would serve without any.
            if value and not items:
                raise ValueError("only blanks between commas; leave it empty to mean none")
            return items
        return value

    @field_validator("attn_impl", "ocr_engine", "ocr_device", "ocr_dtype", "ocr_log_format", "ocr_log_level",
                     mode="before")
    @classmethod
    def _any_case(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("ocr_pdf_workers", mode="before")
    @classmethod
    def _count_or_auto(cls, value: object) -> object:
        text = str(value).strip()
        if isinstance(value, str) and text.lower() == "auto":
            return "auto"
        if isinstance(value, bool) or not re.fullmatch(r"[0-9]+", text) or int(text) < 1:
            raise ValueError("expected a whole number of at least 1, or auto")
        return int(text)

    @field_validator("ocr_runs_dir", "ocr_history_dir", mode="before")
    @classmethod
    def _a_folder(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            raise ValueError("a folder is needed (an empty value would mean the current folder)")
        return value

    @field_validator("ocr_api_keys")
    @classmethod
    def _usable_keys(cls, keys: list[str]) -> list[str]:
        for number, key in enumerate(keys, 1):
            problem = key_problem(key)
            if problem:
                raise ValueError(f"key {number} of the list {problem}, so it could never match "
                                 f"(keys are separated by commas)")
        return keys

    @field_validator("ocr_vllm_api_key")
    @classmethod
    def _sendable_key(cls, key: str) -> str:
        problem = key_problem(key) if key else None
        if problem:
            raise ValueError(f"the key {problem}, so it cannot be sent")
        return key

    @field_validator("ocr_vllm_urls")
    @classmethod
    def _server_urls(cls, urls: list[str]) -> list[str]:
        return [base_url(url) for url in urls]

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        return [origin if origin == "*" else web_origin(origin) for origin in origins]

    @model_validator(mode="after")
    def _vllm_needs_servers(self) -> "Settings":
        if self.ocr_engine is EngineChoice.vllm and not self.ocr_vllm_urls:
            raise ValueError("DEEPSEEK_OCR_ENGINE=vllm needs DEEPSEEK_OCR_VLLM_URLS (comma-separated base URLs)")
        return self

    @model_validator(mode="after")
    def _default_prompt_is_accepted(self) -> "Settings":
        """The default prompt passes the checks every request's prompt does: else every request without one fails."""
        prompt = self.ocr_default_prompt
        if prompt.count(IMAGE_PLACEHOLDER) > 1:
            raise ValueError(f"DEEPSEEK_OCR_DEFAULT_PROMPT has {prompt.count(IMAGE_PLACEHOLDER)} {IMAGE_PLACEHOLDER}; "
                             f"a prompt may have it at most once (it is added in front when missing)")
        if len(prompt) > self.ocr_max_prompt_chars:
            raise ValueError(f"DEEPSEEK_OCR_DEFAULT_PROMPT is {len(prompt)} characters, more than "
                             f"DEEPSEEK_OCR_MAX_PROMPT_CHARS={self.ocr_max_prompt_chars}: every request without a "
                             f"prompt would be refused")
        return self

    @model_validator(mode="after")
    def _batches_start_within_the_deadline(self) -> "Settings":
        if self.ocr_batch_wait_ms / 1000 >= self.ocr_request_timeout_s:
            raise ValueError(f"DEEPSEEK_OCR_BATCH_WAIT_MS={self.ocr_batch_wait_ms:g} is not shorter than "
                             f"DEEPSEEK_OCR_REQUEST_TIMEOUT_S={self.ocr_request_timeout_s:g}: a page waiting alone "
                             f"for company would time out")
        return self

    @model_validator(mode="after")
    def _repetition_guard_can_act(self) -> "Settings":
        if self.ocr_ngram_size and self.ocr_ngram_window and self.ocr_ngram_size > self.ocr_ngram_window:
            raise ValueError(f"DEEPSEEK_OCR_NGRAM_SIZE={self.ocr_ngram_size} is larger than DEEPSEEK_OCR_NGRAM_WINDOW="
                             f"{self.ocr_ngram_window}: the repetition guard could never act (0 in either turns "
                             f"it off)")
        return self

    @field_validator("ocr_retry_temperatures")
    @classmethod
    def _sampling_temperatures(cls, temperatures: list[float]) -> list[float]:
        # 0 would be greedy decoding again, which is what looped; above 2 the text is noise (OpenAI's bound too).
        if not temperatures:
            raise ValueError("at least one temperature is needed (DEEPSEEK_OCR_PAGE_RETRIES=0 turns retries off)")
        for temperature in temperatures:
            if not 0 < temperature <= MAX_TEMPERATURE:
                raise ValueError(f"{temperature:g} is not a sampling temperature: each is above 0 and at most "
                                 f"{MAX_TEMPERATURE:g}")
        return temperatures

    @field_validator("ocr_root_path")
    @classmethod
    def _absolute_prefix(cls, value: str) -> str:
        if value and (not value.startswith("/") or any(c in value for c in "?#\\ ")):
            raise ValueError("a path prefix starting with '/', such as /ocr")
        return value

    @field_validator("ocr_default_mode")
    @classmethod
    def _known_mode(cls, value: str) -> str:
        mode = value.strip().lower()
        if mode not in ALL_MODE_NAMES:
            raise ValueError(f"unknown mode, expected one of {', '.join(ALL_MODE_NAMES)}")
        return mode

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_image_mb * 1024 * 1024)

    @property
    def pdf_worker_count(self) -> int:
        """DEEPSEEK_OCR_PDF_WORKERS. "auto": in front of vLLM, where the workers do every page's work, the cores this
        process may use less one, from 2 to MAX_AUTO_PDF_WORKERS; with a model in this process, which has the cores
        to itself, 2 (they only render PDFs)."""
        if self.ocr_pdf_workers != "auto":
            return self.ocr_pdf_workers
        if self.ocr_engine is not EngineChoice.vllm:
            return 2
        return min(max(usable_cores() - 1, 2), MAX_AUTO_PDF_WORKERS)


class SettingsError(Exception):
    """A setting has a value the service cannot run with; the message names the variable."""


# The most worker processes "auto" starts: each is an interpreter with Pillow and PDFium (~60 MB), started with the
# service; more can be asked for by number.
MAX_AUTO_PDF_WORKERS = 16

# cgroup v2, then v1: the CPU quota a container may be held to, as "quota period" (quota "max" or -1: none).
CPU_QUOTA_FILES = (("/sys/fs/cgroup/cpu.max",),
                   ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu/cpu.cfs_period_us"))


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), fewer when a container's CPU quota allows fewer."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    for paths in CPU_QUOTA_FILES:
        try:
            fields = " ".join(Path(path).read_text() for path in paths).split()
            quota, period = float(fields[0]), float(fields[1])
        except (OSError, ValueError, IndexError):  # no such file, or "max": no quota
            continue
        if quota > 0 and period > 0:
            return max(1, min(cores, math.ceil(quota / period)))
    return cores


# Values never repeated in an error message or a log line.
SECRET_FIELDS = frozenset({"ocr_api_keys", "ocr_vllm_api_key"})
# pydantic's message for a bad boolean does not say what it accepts.
BOOLEAN_CHOICES = "expected true or false (also 1/0, yes/no, on/off)"


def key_problem(key: str) -> str | None:
    """Why a key cannot be sent in an HTTP header as it is written (a header carries ASCII: the bytes a client
    sends for "é" are not the ones compared), or None. Never quotes the key: a message must not leak it."""
    if any(character.isspace() for character in key):
        return "contains a space"
    if not all("!" <= character <= "~" for character in key):
        return "has characters other than printable ASCII, which an HTTP header cannot carry"
    return None


def _http_address(text: str, example: str) -> tuple[str, str, int | None, str]:
    """(scheme, host as written in a URL, explicit port, path) of an http(s) URL, or ValueError saying what is
    wrong with it."""
    if any(character.isspace() for character in text):
        raise ValueError(f"{text!r} contains a space: separate items with commas")
    parts = urlsplit(text)
    if parts.scheme.lower() not in DEFAULT_PORTS or not parts.netloc:
        raise ValueError(f"{text!r} is not an http(s) URL such as {example}")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{text!r} has a user name or password: they would be logged; leave them out")
    host = parts.hostname or ""
    try:
        ipaddress.ip_address(host)
        is_ip = True
    except ValueError:
        is_ip = False
    if not is_ip and not HOSTNAME.fullmatch(host):
        raise ValueError(f"{text!r} has no valid host name")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise ValueError(f"{text!r} has an impossible port (1 to 65535)")
    if parts.query or parts.fragment or text.rstrip().endswith(("?", "#")):
        raise ValueError(f"{text!r} has a query or a fragment")
    written_host = f"[{host}]" if ":" in host else host
    return parts.scheme.lower(), written_host, port, parts.path


def base_url(text: str) -> str:
    """A vLLM server's base URL, scheme://host[:port] without a trailing slash (the engine adds /v1/...)."""
    scheme, host, port, path = _http_address(text, "http://gpu-1:8000")
    if path not in ("", "/"):
        raise ValueError(f"{text!r} has a path ({path}): give the server's root, such as http://gpu-1:8000 "
                         f"(the service adds /v1/... itself)")
    return f"{scheme}://{host}" + (f":{port}" if port is not None else "")


def web_origin(text: str) -> str:
    """A browser origin as browsers send it: scheme://host[:port], lowercase, no default port, no trailing slash
    (an entry written otherwise would never match)."""
    scheme, host, port, path = _http_address(text, "https://app.example.com")
    if path not in ("", "/"):
        raise ValueError(f"{text!r} has a path ({path}); an origin is scheme://host[:port] only")
    return f"{scheme}://{host}" + (f":{port}" if port not in (None, DEFAULT_PORTS[scheme]) else "")


def setting_names() -> list[str]:
    return [env_name(field) for field in Settings.model_fields]


def startup_warnings(settings: Settings, environ: Mapping[str, str] | None = None) -> list[str]:
    """What the configuration probably gets wrong without being impossible: `DEEPSEEK_OCR_*` variables that no
    setting reads (a typo leaves its setting at the default: `DEEPSEEK_OCR_APIKEYS` serves without keys), and
    settings given that the chosen engine ignores."""
    environ = os.environ if environ is None else environ
    known = setting_names()
    warnings = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(f"{ENV_PREFIX}OCR_") or upper in known or upper in OTHER_VARIABLES:
            continue
        closest = difflib.get_close_matches(upper, known, n=1, cutoff=0.6)
        hint = f" (did you mean {closest[0]}?)" if closest else ""
        warnings.append(f"{name} is not a setting and is ignored{hint}")
    if settings.ocr_vllm_urls and settings.ocr_engine is not EngineChoice.vllm:
        warnings.append(f"DEEPSEEK_OCR_VLLM_URLS is ignored: DEEPSEEK_OCR_ENGINE is {settings.ocr_engine.value}, "
                        f"not vllm")
    if "DEEPSEEK_OCR_API_KEY" in (name.upper() for name in environ) and not (
            settings.ocr_api_keys or settings.ocr_api_keys_file):
        warnings.append("DEEPSEEK_OCR_API_KEY is the command-line client's key; the service's keys are "
                        "DEEPSEEK_OCR_API_KEYS (or DEEPSEEK_OCR_API_KEYS_FILE), and none is set: /api/ needs no key")
    return warnings


def env_name(field: str) -> str:
    return f"{ENV_PREFIX}{field}".upper()


def load_settings(**overrides: object) -> Settings:
    """Reads the environment (plus `overrides`, keyed by field name) and names the variable of each bad value."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            if not error["loc"]:  # a check across settings: its message names them
                problems.append(error["msg"].removeprefix("Value error, "))
                continue
            field = str(error["loc"][0])
            message = BOOLEAN_CHOICES if error["type"] == "bool_parsing" else error["msg"]
            message = message.removeprefix("Value error, ")
            value = repr(error.get("input"))
            got = "" if field in SECRET_FIELDS or value in message else f" (got {value})"  # a list names its item
            problems.append(f"{env_name(field)}: {message}{got}")
        raise SettingsError("; ".join(problems)) from None
