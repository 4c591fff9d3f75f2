"""Every setting of the service, read from `DEEPSEEK_*` environment variables (the README's table)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from typing_extensions import Annotated

from dsocr.catalogue import ALL_MODE_NAMES, DEFAULT_PROMPT

ENV_PREFIX = "DEEPSEEK_"


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


class EngineChoice(str, Enum):
    auto = "auto"
    transformers = "transformers"
    remote_code = "remote-code"
    vllm = "vllm"


class Settings(BaseSettings):
    """Field `x` is read from `DEEPSEEK_X` (case-insensitive)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, case_sensitive=False, extra="ignore")

    # The seed's variables.
    ocr_model_path: str = Field("../../ocr_project/model", min_length=1)
    attn_impl: AttnImpl = AttnImpl.flash_attention_2
    allowed_origins: Annotated[list[str], NoDecode] = ["*"]
    ocr_api_keys: Annotated[list[str], NoDecode] = Field([], repr=False)
    ocr_api_keys_file: str = ""
    max_image_mb: float = Field(15, gt=0)
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

    # Request guardrails.
    ocr_max_prompt_chars: int = Field(4000, ge=1)
    ocr_max_prompt_tokens: int = Field(512, ge=1)
    ocr_max_image_pixels: int = Field(50_000_000, ge=1)

    # PDFs: upstream renders pages at 144 DPI.
    ocr_pdf_dpi: float = Field(144, gt=0, le=1200)
    ocr_max_pdf_pages: int = Field(50, ge=1)
    # Rendering runs in worker processes, killed past a page's time budget.
    ocr_pdf_workers: int = Field(2, ge=1)
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

    # Repetition guard: upstream's image setting, n-gram 30 within the last 90 tokens; 0 disables.
    ocr_ngram_size: int = Field(30, ge=0)
    ocr_ngram_window: int = Field(90, ge=0)

    # Artifacts of finished runs (figure crops, annotated pages).
    ocr_run_ttl_s: float = Field(3600, ge=0)
    ocr_runs_max_mb: float = Field(1024, ge=0)

    # What the web frontend shows: page previews in the answer, and a history of finished results.
    ocr_page_previews: bool = True
    ocr_history: bool = True
    ocr_history_dir: Path = Path("history")
    ocr_history_max: int = Field(500, ge=1)
    ocr_history_ttl_s: float = Field(604800, gt=0)  # a week
    ocr_history_max_mb: float = Field(2048, gt=0)

    # Operating it: the page at /, the path prefix behind a proxy, logs, stream keep-alives.
    ocr_ui: bool = True
    ocr_root_path: str = ""
    ocr_log_format: LogFormat = LogFormat.text
    ocr_log_level: str = "info"
    ocr_log_probes: bool = False
    ocr_sse_ping_s: float = Field(15, gt=0)

    @field_validator("allowed_origins", "ocr_vllm_urls", "ocr_api_keys", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("ocr_vllm_urls")
    @classmethod
    def _http_urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{url!r} is not an http(s) URL")
        return [url.rstrip("/") for url in urls]

    @model_validator(mode="after")
    def _vllm_needs_servers(self) -> "Settings":
        if self.ocr_engine is EngineChoice.vllm and not self.ocr_vllm_urls:
            raise ValueError("DEEPSEEK_OCR_ENGINE=vllm needs DEEPSEEK_OCR_VLLM_URLS (comma-separated base URLs)")
        return self

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


class SettingsError(Exception):
    """A setting has a value the service cannot run with; the message names the variable."""


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
            problems.append(f"{env_name(field)}: {error['msg']} (got {error.get('input')!r})")
        raise SettingsError("; ".join(problems)) from None
