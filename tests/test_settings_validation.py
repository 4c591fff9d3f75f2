"""Mistyped settings: every value the service cannot run with stops startup with one line naming the variable,
including values that parse but would make every request fail, and checks across settings; a variable no setting
reads is named in a warning."""

from __future__ import annotations

import os
import subprocess
import sys
from enum import Enum
from pathlib import Path

import pytest

from dsocr.catalogue import DEFAULT_PROMPT
from helpers import ROOT
from settings import Settings, SettingsError, load_settings, startup_warnings

FLOAT_FIELDS = [name for name, field in Settings.model_fields.items() if field.annotation is float]
INT_FIELDS = [name for name, field in Settings.model_fields.items() if field.annotation is int]
ENUM_FIELDS = [name for name, field in Settings.model_fields.items()
               if isinstance(field.annotation, type) and issubclass(field.annotation, Enum)]
BOOL_FIELDS = [name for name, field in Settings.model_fields.items() if field.annotation is bool]


def variable(field: str) -> str:
    return f"DEEPSEEK_{field}".upper()


pytestmark = pytest.mark.usefixtures("clean_env")  # conftest.py


def refusal(monkeypatch: pytest.MonkeyPatch, **environ: str) -> str:
    """The one-line message load_settings refuses `environ` with."""
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as refused:
        load_settings()
    message = str(refused.value)
    assert "\n" not in message
    return message


def test_the_kinds_of_settings_are_all_found() -> None:
    """The parametrised tests below cover every setting of each kind; this guards their lists against a refactor
    that would leave them empty."""
    assert {"max_image_mb", "ocr_runs_max_mb", "ocr_history_max_mb", "ocr_batch_wait_ms"} <= set(FLOAT_FIELDS)
    assert {"ocr_max_batch_size", "ocr_max_prompt_chars"} <= set(INT_FIELDS)
    assert {"ocr_log_level", "ocr_log_format", "ocr_device", "attn_impl"} <= set(ENUM_FIELDS)
    assert {"ocr_ui", "ocr_history"} <= set(BOOL_FIELDS)


@pytest.mark.parametrize(("name", "value"), [
    ("DEEPSEEK_OCR_LOG_LEVEL", "verbose"),
    ("DEEPSEEK_OCR_RUNS_MAX_MB", "inf"),
    ("DEEPSEEK_OCR_HISTORY_MAX_MB", "inf"),
    ("DEEPSEEK_MAX_IMAGE_MB", "inf"),
    ("DEEPSEEK_OCR_BATCH_WAIT_MS", "inf"),
])
def test_the_reported_values_are_refused_naming_their_variable(
        monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    assert refusal(monkeypatch, **{name: value}).startswith(f"{name}: ")


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "Infinity"])
@pytest.mark.parametrize("field", FLOAT_FIELDS)
def test_no_number_setting_takes_infinity_or_nan(monkeypatch: pytest.MonkeyPatch, field: str, value: str) -> None:
    message = refusal(monkeypatch, **{variable(field): value})
    assert message.startswith(f"{variable(field)}: ") and "finite" in message


@pytest.mark.parametrize("field", FLOAT_FIELDS + INT_FIELDS)
def test_no_number_setting_takes_a_negative_value(monkeypatch: pytest.MonkeyPatch, field: str) -> None:
    assert refusal(monkeypatch, **{variable(field): "-1"}).startswith(f"{variable(field)}: ")


@pytest.mark.parametrize("field", ["max_image_mb", "ocr_runs_max_mb", "ocr_history_max_mb"])
def test_a_size_too_large_to_count_in_bytes_is_refused(monkeypatch: pytest.MonkeyPatch, field: str) -> None:
    # 1e308 MB is finite, but in bytes it is not: the service would fail computing its cap.
    assert refusal(monkeypatch, **{variable(field): "1e308"}).startswith(f"{variable(field)}: ")


@pytest.mark.parametrize("field", ENUM_FIELDS)
def test_a_choice_setting_names_its_choices_and_takes_any_case(monkeypatch: pytest.MonkeyPatch, field: str) -> None:
    choices = [member.value for member in Settings.model_fields[field].annotation]
    message = refusal(monkeypatch, **{variable(field): "nonsense"})
    assert message.startswith(f"{variable(field)}: ")
    assert all(f"'{choice}'" in message for choice in choices), message
    monkeypatch.setenv("DEEPSEEK_OCR_VLLM_URLS", "http://gpu-1:8000")  # what the last engine, vllm, needs
    monkeypatch.setenv(variable(field), f" {choices[-1].upper()} ")
    assert getattr(load_settings(), field).value == choices[-1]


@pytest.mark.parametrize("field", BOOL_FIELDS)
def test_a_yes_no_setting_says_what_it_takes(monkeypatch: pytest.MonkeyPatch, field: str) -> None:
    message = refusal(monkeypatch, **{variable(field): "maybe"})
    assert message.startswith(f"{variable(field)}: ") and "true or false" in message


def test_the_log_level_is_one_of_the_documented_four(monkeypatch: pytest.MonkeyPatch) -> None:
    message = refusal(monkeypatch, DEEPSEEK_OCR_LOG_LEVEL="verbose")
    assert "'debug', 'info', 'warning' or 'error'" in message
    monkeypatch.setenv("DEEPSEEK_OCR_LOG_LEVEL", "DEBUG")
    assert load_settings().ocr_log_level.value == "debug"


# --- values every request would fail with, checked against each other -----------------------------------------

def test_a_prompt_limit_below_the_default_prompt_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    message = refusal(monkeypatch, DEEPSEEK_OCR_MAX_PROMPT_CHARS=str(len(DEFAULT_PROMPT) - 1))
    assert "DEEPSEEK_OCR_DEFAULT_PROMPT" in message and "DEEPSEEK_OCR_MAX_PROMPT_CHARS" in message
    monkeypatch.setenv("DEEPSEEK_OCR_MAX_PROMPT_CHARS", str(len(DEFAULT_PROMPT)))
    assert load_settings().ocr_max_prompt_chars == len(DEFAULT_PROMPT)


def test_a_default_prompt_longer_than_the_limit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    message = refusal(monkeypatch, DEEPSEEK_OCR_DEFAULT_PROMPT="<image>\n" + "x" * 4000)
    assert "DEEPSEEK_OCR_DEFAULT_PROMPT" in message and "DEEPSEEK_OCR_MAX_PROMPT_CHARS=4000" in message


def test_a_default_prompt_with_two_images_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    message = refusal(monkeypatch, DEEPSEEK_OCR_DEFAULT_PROMPT="<image>\n<image>\nFree OCR.")
    assert message.startswith("DEEPSEEK_OCR_DEFAULT_PROMPT has 2 <image>")
    monkeypatch.setenv("DEEPSEEK_OCR_DEFAULT_PROMPT", "Free OCR.")  # no <image>: it is added in front
    assert load_settings().ocr_default_prompt == "Free OCR."


def test_a_batch_wait_as_long_as_the_request_deadline_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    message = refusal(monkeypatch, DEEPSEEK_OCR_BATCH_WAIT_MS="5000", DEEPSEEK_OCR_REQUEST_TIMEOUT_S="5")
    assert "DEEPSEEK_OCR_BATCH_WAIT_MS=5000" in message and "DEEPSEEK_OCR_REQUEST_TIMEOUT_S=5" in message
    monkeypatch.setenv("DEEPSEEK_OCR_BATCH_WAIT_MS", "4999")
    assert load_settings().ocr_batch_wait_ms == 4999


def test_a_repetition_guard_that_could_never_act_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    message = refusal(monkeypatch, DEEPSEEK_OCR_NGRAM_SIZE="100")
    assert "DEEPSEEK_OCR_NGRAM_SIZE=100" in message and "DEEPSEEK_OCR_NGRAM_WINDOW=90" in message
    monkeypatch.setenv("DEEPSEEK_OCR_NGRAM_WINDOW", "0")  # the guard turned off: nothing to refuse
    assert load_settings().ocr_ngram_size == 100


@pytest.mark.parametrize("field", ["ocr_max_batch_size", "ocr_max_queue", "ocr_request_timeout_s",
                                   "ocr_upload_timeout_s", "ocr_pdf_page_timeout_s", "ocr_pdf_workers",
                                   "ocr_vllm_max_inflight", "ocr_sse_ping_s", "max_image_mb"])
def test_a_zero_that_would_stop_every_request_is_refused(monkeypatch: pytest.MonkeyPatch, field: str) -> None:
    assert refusal(monkeypatch, **{variable(field): "0"}).startswith(f"{variable(field)}: ")


@pytest.mark.parametrize("field", ["ocr_runs_dir", "ocr_history_dir"])
def test_an_empty_folder_is_refused_rather_than_the_current_one(monkeypatch: pytest.MonkeyPatch, field: str) -> None:
    assert refusal(monkeypatch, **{variable(field): ""}).startswith(f"{variable(field)}: ")


# --- API keys -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [" , ,", ",", "   "])
def test_keys_that_are_only_blanks_refuse_to_start(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """Blanks would have served without any key."""
    assert refusal(monkeypatch, DEEPSEEK_OCR_API_KEYS=value).startswith("DEEPSEEK_OCR_API_KEYS: only blanks")


def test_empty_keys_mean_none_and_a_trailing_comma_is_fine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPSEEK_OCR_API_KEYS", "")
    assert load_settings().ocr_api_keys == []
    monkeypatch.setenv("DEEPSEEK_OCR_API_KEYS", "key-one, key-two,")
    assert load_settings().ocr_api_keys == ["key-one", "key-two"]


@pytest.mark.parametrize(("value", "problem"), [
    ("good-key,clé-secrète", "key 2 of the list has characters other than printable ASCII"),
    ("key-one key-two", "key 1 of the list contains a space"),
])
def test_a_key_that_could_never_match_is_refused_without_showing_it(
        monkeypatch: pytest.MonkeyPatch, value: str, problem: str) -> None:
    message = refusal(monkeypatch, DEEPSEEK_OCR_API_KEYS=value)
    assert message.startswith(f"DEEPSEEK_OCR_API_KEYS: {problem}")
    assert "clé" not in message and "key-one" not in message and "good-key" not in message


def test_a_vllm_key_that_cannot_be_sent_is_refused_without_showing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    message = refusal(monkeypatch, DEEPSEEK_OCR_VLLM_API_KEY="sécret")
    assert message.startswith("DEEPSEEK_OCR_VLLM_API_KEY: ") and "sécret" not in message


# --- variables no setting reads -------------------------------------------------------------------------------

def test_an_unknown_variable_is_named_with_the_setting_it_resembles() -> None:
    warnings = startup_warnings(load_settings(), {"DEEPSEEK_OCR_APIKEYS": "secret", "DEEPSEEK_OCR_MAX_IMAGE_MB": "1"})
    assert warnings == [
        "DEEPSEEK_OCR_APIKEYS is not a setting and is ignored (did you mean DEEPSEEK_OCR_API_KEYS?)",
        "DEEPSEEK_OCR_MAX_IMAGE_MB is not a setting and is ignored (did you mean DEEPSEEK_MAX_IMAGE_MB?)",
    ]


def test_settings_and_variables_read_elsewhere_are_not_warned_about() -> None:
    environ = {"DEEPSEEK_OCR_MAX_QUEUE": "3", "deepseek_ocr_ui": "false", "DEEPSEEK_ATTN_IMPL": "eager",
               "DEEPSEEK_OCR_DEMO_DIR": "/tmp/demo", "DEEPSEEK_OCR_SERVER": "http://x", "DEEPSEEK_API_KEY": "other",
               "PATH": "/bin"}
    assert startup_warnings(load_settings(ocr_api_keys="k"), environ) == []


def test_every_variable_the_code_reads_is_a_setting_or_known_to_be_read_elsewhere() -> None:
    """Else the startup warning would call a variable the service reads a typo: a new one read outside settings.py
    belongs in OTHER_VARIABLES."""
    import re

    from settings import OTHER_VARIABLES, setting_names

    sources = [ROOT / "app.py", ROOT / "start.sh", ROOT / "Containerfile", *sorted((ROOT / "dsocr").rglob("*.py")),
               *sorted(path for path in (ROOT / "deploy").rglob("*") if path.is_file())]
    named = {name for path in sources if path.exists()
             for name in re.findall(r"DEEPSEEK_OCR_[A-Z0-9_]*[A-Z0-9]", path.read_text(errors="replace"))}
    assert "DEEPSEEK_OCR_MODEL_PATH" in named
    assert named - set(setting_names()) - OTHER_VARIABLES == set()


def test_the_clients_key_variable_on_a_service_without_keys_is_warned_about() -> None:
    [warning] = startup_warnings(load_settings(), {"DEEPSEEK_OCR_API_KEY": "secret"})
    assert "DEEPSEEK_OCR_API_KEYS" in warning and "secret" not in warning


def test_vllm_urls_the_engine_ignores_are_warned_about() -> None:
    assert startup_warnings(load_settings(ocr_vllm_urls="http://gpu-1:8000"), {}) == [
        "DEEPSEEK_OCR_VLLM_URLS is ignored: DEEPSEEK_OCR_ENGINE is auto, not vllm"]


def test_the_app_logs_the_warnings_at_startup(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
                                              tmp_path: Path) -> None:
    from app import create_app

    monkeypatch.setenv("DEEPSEEK_OCR_APIKEYS", "secret")
    with caplog.at_level("WARNING", logger="deepseek_ocr"):
        create_app(load_settings(ocr_runs_dir=tmp_path / "runs", ocr_history=False))
    assert [(r.levelname, r.getMessage()) for r in caplog.records if "APIKEYS" in r.getMessage()] == [
        ("WARNING", "configuration: DEEPSEEK_OCR_APIKEYS is not a setting and is ignored (did you mean DEEPSEEK_OCR_API_KEYS?)")]


# --- URLs and origins ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "problem"), [
    ("http://gpu-1:99999", "impossible port"),
    ("http://gpu-1:0", "impossible port"),
    ("http://gpu-1:port", "impossible port"),
    ("http://gpu 1:8000", "contains a space"),
    ("http://gpu-1:8000 http://gpu-2:8000", "contains a space: separate items with commas"),
    ("http://gpu-1:8000/v1", "has a path (/v1)"),
    ("http://gpu-1:8000?model=x", "query"),
    ("http://:8000", "no valid host"),
    ("http://gpu..1:8000", "no valid host"),
    ("http://user:pw@gpu-1:8000", "user name or password"),
    ("gpu-1:8000", "not an http(s) URL"),
    ("ftp://gpu-1", "not an http(s) URL"),
])
def test_a_malformed_vllm_url_is_refused_naming_the_setting(
        monkeypatch: pytest.MonkeyPatch, value: str, problem: str) -> None:
    message = refusal(monkeypatch, DEEPSEEK_OCR_ENGINE="vllm", DEEPSEEK_OCR_VLLM_URLS=f"http://gpu-0:8000,{value}")
    assert message.startswith(f"DEEPSEEK_OCR_VLLM_URLS: {value.strip()!r}") and problem in message, message


def test_vllm_urls_are_kept_as_base_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPSEEK_OCR_VLLM_URLS", "HTTP://GPU-1:8000/, https://[::1]:9000, http://10.0.0.7")
    assert load_settings().ocr_vllm_urls == ["http://gpu-1:8000", "https://[::1]:9000", "http://10.0.0.7"]


@pytest.mark.parametrize(("value", "origin"), [
    ("https://app.example/", "https://app.example"),
    ("HTTPS://App.Example:443", "https://app.example"),
    ("http://localhost:5173/", "http://localhost:5173"),
])
def test_an_origin_is_written_as_browsers_send_it(monkeypatch: pytest.MonkeyPatch, value: str, origin: str) -> None:
    monkeypatch.setenv("DEEPSEEK_ALLOWED_ORIGINS", value)
    assert load_settings().allowed_origins == [origin]


@pytest.mark.parametrize(("value", "problem"), [
    ("https://app.example/ui", "has a path (/ui)"),
    ("app.example", "not an http(s) URL"),
    ("https://app.example?x=1", "query"),
])
def test_an_origin_that_could_never_match_is_refused(monkeypatch: pytest.MonkeyPatch, value: str, problem: str) -> None:
    message = refusal(monkeypatch, DEEPSEEK_ALLOWED_ORIGINS=value)
    assert message.startswith("DEEPSEEK_ALLOWED_ORIGINS: ") and problem in message


def test_an_origin_with_a_trailing_slash_is_allowed_by_cors(tmp_path: Path) -> None:
    """What a browser sees: the preflight from the origin written with a slash is allowed."""
    from fastapi.testclient import TestClient

    from app import create_app

    app = create_app(load_settings(allowed_origins="https://app.example/", ocr_runs_dir=tmp_path / "runs",
                                   ocr_history=False))
    preflight = TestClient(app).options("/api/ocr", headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"


# --- the keys file ------------------------------------------------------------------------------------------------

def keys_from(tmp_path: Path, content: bytes) -> "ApiKeys":
    from dsocr.api.middleware.auth import ApiKeys

    keys_file = tmp_path / "keys.txt"
    keys_file.write_bytes(content)
    return ApiKeys([], str(keys_file))


def test_a_keys_file_saved_with_a_byte_order_mark_works(tmp_path: Path) -> None:
    keys = keys_from(tmp_path, "\ufeffkey-one\r\nkey-two\r\n".encode())
    assert keys.accepts("key-one") and keys.accepts("key-two")


def test_a_comment_after_a_key_is_left_out(tmp_path: Path) -> None:
    keys = keys_from(tmp_path, b"# the team's keys\nkey-one   # alice\nkey-two\t# bob\n  # retired: key-three\nk#4\n")
    assert [keys.accepts(key) for key in ("key-one", "key-two", "key-three", "k#4")] == [True, True, False, True]
    assert not keys.accepts("key-one   # alice")


@pytest.mark.parametrize(("content", "problem"), [
    ("key-one\n\nclé-deux\n".encode(), "line 3: the key has characters other than printable ASCII"),
    ("key-one\nkey-two key-three\n".encode(), "line 2: the key contains a space"),
    ("key-one\n\ufeffkey-two\n".encode(), "line 2: the key has characters other than printable ASCII"),
])
def test_a_key_in_the_file_that_could_never_match_is_refused_by_line(
        tmp_path: Path, content: bytes, problem: str) -> None:
    with pytest.raises(SettingsError) as refused:
        keys_from(tmp_path, content)
    message = str(refused.value)
    assert message.startswith("DEEPSEEK_OCR_API_KEYS_FILE=") and problem in message, message
    assert "deux" not in message and "key-two" not in message and "key-three" not in message


def test_a_keys_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="DEEPSEEK_OCR_API_KEYS_FILE=.*not UTF-8"):
        keys_from(tmp_path, "clé".encode("latin-1"))


def test_a_bad_key_on_reload_keeps_the_keys_there_were(tmp_path: Path) -> None:
    keys = keys_from(tmp_path, b"key-one\n")
    (tmp_path / "keys.txt").write_text("clé\n")
    with pytest.raises(SettingsError, match="line 1"):
        keys.reload()
    assert keys.accepts("key-one")


def test_the_app_accepts_a_key_from_a_file_with_a_bom_and_comments(tmp_path: Path) -> None:
    """What a client sees: the key written in a Windows editor, with a comment, is accepted; another is not."""
    from fastapi.testclient import TestClient

    from app import create_app

    keys_file = tmp_path / "keys.txt"
    keys_file.write_bytes("\ufeffkey-one  # alice\r\n".encode())
    app = create_app(load_settings(ocr_api_keys_file=str(keys_file), ocr_runs_dir=tmp_path / "runs",
                                   ocr_history=False))
    client = TestClient(app)
    assert client.get("/api/history", headers={"X-API-Key": "nope"}).status_code == 401
    assert client.get("/api/history", headers={"X-API-Key": "key-one"}).status_code != 401


# --- through a real start -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("environ", "named"), [
    ({"DEEPSEEK_OCR_LOG_LEVEL": "verbose"}, "DEEPSEEK_OCR_LOG_LEVEL"),
    ({"DEEPSEEK_OCR_RUNS_MAX_MB": "inf"}, "DEEPSEEK_OCR_RUNS_MAX_MB"),
    ({"DEEPSEEK_OCR_HISTORY_MAX_MB": "inf"}, "DEEPSEEK_OCR_HISTORY_MAX_MB"),
    ({"DEEPSEEK_OCR_API_KEYS": " , ,"}, "DEEPSEEK_OCR_API_KEYS"),
    ({"DEEPSEEK_OCR_ENGINE": "vllm", "DEEPSEEK_OCR_VLLM_URLS": "http://gpu-1:99999"}, "DEEPSEEK_OCR_VLLM_URLS"),
    ({"DEEPSEEK_OCR_MAX_PROMPT_CHARS": "10"}, "DEEPSEEK_OCR_MAX_PROMPT_CHARS"),
    ({"DEEPSEEK_OCR_API_KEYS_FILE": str(ROOT / "tests" / "no-such-keys-file")}, "DEEPSEEK_OCR_API_KEYS_FILE"),
])
def test_uvicorn_refuses_with_one_line_and_no_traceback(environ: dict[str, str], named: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("DEEPSEEK_")}
    result = subprocess.run(
        [sys.executable, "-m", "uvicorn", "app:app", "--host", "127.0.0.1", "--port", "0"],
        cwd=ROOT, env={**env, **environ}, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Invalid configuration: ") and named in lines[0], result.stderr


def test_uvicorn_refuses_a_keys_file_with_a_key_that_could_never_match(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text("key-one\nclé-deux\n")
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("DEEPSEEK_")}
    result = subprocess.run(
        [sys.executable, "-m", "uvicorn", "app:app", "--host", "127.0.0.1", "--port", "0"],
        cwd=ROOT, env={**env, "DEEPSEEK_OCR_API_KEYS_FILE": str(keys_file), "DEEPSEEK_OCR_RUNS_DIR": str(tmp_path)},
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [f"Invalid configuration: DEEPSEEK_OCR_API_KEYS_FILE={str(keys_file)!r}, line 2: the key has "
                     f"characters other than printable ASCII, which an HTTP header cannot carry, so it could never "
                     f"match (one key a line; a comment starts with #)"]


@pytest.mark.parametrize(("cores", "quota", "workers"), [
    (1, None, 2), (2, None, 2), (4, None, 3), (16, None, 15), (96, None, 16),
    (64, "300000 100000", 2), (64, "250000 100000", 2), (64, "800000 100000", 7), (8, "max 100000", 7),
])
def test_pdf_workers_in_front_of_vllm_follow_the_cores_and_the_cpu_quota(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cores: int, quota: str | None, workers: int) -> None:
    import settings

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)))
    cpu_max = tmp_path / "cpu.max"
    if quota is not None:
        cpu_max.write_text(quota + "\n")
    monkeypatch.setattr(settings, "CPU_QUOTA_FILES", ((str(cpu_max),),))
    monkeypatch.setenv("DEEPSEEK_OCR_ENGINE", "vllm")
    monkeypatch.setenv("DEEPSEEK_OCR_VLLM_URLS", "http://127.0.0.1:9")
    assert load_settings().pdf_worker_count == workers
    monkeypatch.setenv("DEEPSEEK_OCR_PDF_WORKERS", "5")
    assert load_settings().pdf_worker_count == 5


def test_pdf_workers_beside_a_model_in_this_process_are_two(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(32)))
    assert load_settings(ocr_engine="transformers").pdf_worker_count == 2


@pytest.mark.parametrize("value", ["many", "2.5", "-3", "", "4_0", "\uff11\uff12"])
def test_pdf_workers_are_a_count_or_auto(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    assert "a whole number of at least 1, or auto" in refusal(monkeypatch, DEEPSEEK_OCR_PDF_WORKERS=value)
