"""Which install profile a checkpoint needs (dsocr/profiles.py, `python -m dsocr profile`), asked by start.sh with
the system's python3 before any virtual environment exists: decided from DEEPSEEK_OCR_ENGINE, a folder's
config.json, a repo id's config.json in the Hugging Face cache (found where huggingface_hub looks), or the name
of an original checkpoint not cached yet."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dsocr.__main__ import main
from dsocr.profiles import Profile, cached_config, hub_cache, profile_for
from helpers import ROOT, fake_hub_repo, subprocess_env

ORIGINAL_CONFIG = {"model_type": "deepseek_vl_v2", "auto_map": {"AutoModel": "modeling_deepseekocr.DeepseekOCRForCausalLM"}}
NATIVE_CONFIG = {"model_type": "deepseek_ocr2", "architectures": ["DeepseekOcr2ForConditionalGeneration"]}


def checkpoint_folder(path: Path, config: dict | str) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    return path


def test_the_engine_setting_decides_before_the_checkpoint(tmp_path: Path) -> None:
    original = str(checkpoint_folder(tmp_path / "original", ORIGINAL_CONFIG))
    native = str(checkpoint_folder(tmp_path / "native", NATIVE_CONFIG))
    assert profile_for({"DEEPSEEK_OCR_ENGINE": "vllm", "DEEPSEEK_OCR_MODEL_PATH": original}) is Profile.vllm
    assert profile_for({"DEEPSEEK_OCR_ENGINE": "remote-code", "DEEPSEEK_OCR_MODEL_PATH": native}) is Profile.remote_code
    assert profile_for({"DEEPSEEK_OCR_ENGINE": "transformers", "DEEPSEEK_OCR_MODEL_PATH": original}) is Profile.native
    for auto in ({}, {"DEEPSEEK_OCR_ENGINE": "auto"}, {"DEEPSEEK_OCR_ENGINE": ""}):
        assert profile_for({**auto, "DEEPSEEK_OCR_MODEL_PATH": original}) is Profile.remote_code
        assert profile_for({**auto, "DEEPSEEK_OCR_MODEL_PATH": native}) is Profile.native


def test_a_folder_is_remote_code_when_its_config_maps_code_of_its_own(tmp_path: Path) -> None:
    def profile(config: dict | str) -> Profile:
        folder = checkpoint_folder(tmp_path / str(len(list(tmp_path.iterdir()))), config)
        return profile_for({"DEEPSEEK_OCR_MODEL_PATH": str(folder)})

    assert profile(ORIGINAL_CONFIG) is Profile.remote_code
    assert profile(NATIVE_CONFIG) is Profile.native
    assert profile({**NATIVE_CONFIG, "auto_map": {}}) is Profile.native
    # Unreadable: native, and the service itself names what is wrong when it starts.
    assert profile("{not json") is Profile.native
    assert profile('["a list"]') is Profile.native
    assert profile_for({"DEEPSEEK_OCR_MODEL_PATH": str(tmp_path / "missing")}) is Profile.native


def test_the_demo_is_native_whatever_its_spelling() -> None:
    for demo in ("demo", " Demo ", "DEMO"):
        assert profile_for({"DEEPSEEK_OCR_MODEL_PATH": demo}) is Profile.native


def test_unset_the_model_path_is_the_seeds_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Like settings.py: ../../ocr_project/model from the service's folder; absent, the default repo (native)."""
    service = tmp_path / "service" / "main"
    service.mkdir(parents=True)
    monkeypatch.chdir(service)
    assert profile_for({}) is Profile.native
    checkpoint_folder(tmp_path / "ocr_project" / "model", ORIGINAL_CONFIG)
    assert profile_for({}) is Profile.remote_code


def test_a_repo_id_is_read_from_the_hub_cache_and_the_original_names_are_known_before(tmp_path: Path) -> None:
    env = {"HF_HUB_CACHE": str(tmp_path / "hub")}
    fake_hub_repo(tmp_path / "hub", "someone/original-ocr", ORIGINAL_CONFIG)
    fake_hub_repo(tmp_path / "hub", "deepseek-ai/DeepSeek-OCR-2", NATIVE_CONFIG)  # a cached config wins over the name
    assert profile_for({**env, "DEEPSEEK_OCR_MODEL_PATH": "someone/original-ocr"}) is Profile.remote_code
    assert profile_for({**env, "DEEPSEEK_OCR_MODEL_PATH": "deepseek-ai/DeepSeek-OCR-2"}) is Profile.native
    assert profile_for({**env, "DEEPSEEK_OCR_MODEL_PATH": "deepseek-ai/DeepSeek-OCR"}) is Profile.remote_code
    assert profile_for({**env, "DEEPSEEK_OCR_MODEL_PATH": "someone/unknown"}) is Profile.native
    # A path with "..", though shaped like owner/name, is a folder, never a repo.
    assert profile_for({**env, "DEEPSEEK_OCR_MODEL_PATH": "deepseek-ai/../DeepSeek-OCR"}) is Profile.native


def test_the_snapshot_of_refs_main_is_read_else_any_snapshot(tmp_path: Path) -> None:
    env = {"HF_HUB_CACHE": str(tmp_path / "hub")}
    main_snapshot = fake_hub_repo(tmp_path / "hub", "someone/ocr", NATIVE_CONFIG)
    other = main_snapshot.parent / "fedcba9876543210fedcba9876543210fedcba98"
    checkpoint_folder(other, ORIGINAL_CONFIG)
    assert cached_config("someone/ocr", env) == main_snapshot / "config.json"
    (main_snapshot / "config.json").unlink()  # refs/main names a snapshot without config.json
    assert cached_config("someone/ocr", env) == other / "config.json"
    (main_snapshot.parent.parent / "refs" / "main").unlink()
    assert cached_config("someone/ocr", env) == other / "config.json"
    assert cached_config("someone/absent", env) is None


@pytest.mark.parametrize("variables", [
    {"HF_HUB_CACHE": "a", "HUGGINGFACE_HUB_CACHE": "b", "HF_HOME": "c"},
    {"HUGGINGFACE_HUB_CACHE": "b", "HF_HOME": "c", "XDG_CACHE_HOME": "d"},
    {"HF_HOME": "c", "XDG_CACHE_HOME": "d"},
    {"XDG_CACHE_HOME": "d"},
    {},  # ~/.cache/huggingface/hub
])
def test_the_hub_cache_is_where_huggingface_hub_looks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      variables: dict[str, str]) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    env = {**os.environ, **{name: str(tmp_path / folder) for name, folder in variables.items()}}
    asked = subprocess.run([sys.executable, "-c", "from huggingface_hub import constants; print(constants.HF_HUB_CACHE)"],
                           env=env, capture_output=True, text=True, timeout=60, check=True)
    assert hub_cache(env) == Path(asked.stdout.strip())


def test_python_m_dsocr_profile_prints_the_profile_with_the_standard_library_only(tmp_path: Path) -> None:
    """Run as start.sh runs it, but with no site-packages at all (-S): it must not need pydantic, transformers or
    anything a virtual environment brings; and every module it loaded is the standard library's or dsocr's."""
    folder = checkpoint_folder(tmp_path / "original", ORIGINAL_CONFIG)
    check = (
        "import runpy, sys\n"
        "sys.argv = ['dsocr', 'profile']\n"
        "try:\n"
        "    runpy.run_module('dsocr', run_name='__main__')\n"
        "except SystemExit as exit:\n"
        "    assert not exit.code, exit.code\n"
        "outside = sorted({name.split('.')[0] for name in sys.modules} - set(sys.stdlib_module_names) - {'dsocr', '__main__'})\n"
        "print('outside:', outside)\n"
    )
    env = {"PATH": "/usr/bin:/bin", "DEEPSEEK_OCR_MODEL_PATH": str(folder), "HF_HUB_CACHE": str(tmp_path / "hub")}
    done = subprocess.run([sys.executable, "-S", "-c", check], check=False, cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["remote-code", "outside: []"]


def test_python_m_dsocr_names_its_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit:
        main([])
    usage = capsys.readouterr().err.splitlines()[0]
    assert exit.value.code == 2 and all(command in usage for command in ("profile", "convert", "worker")), usage
    with pytest.raises(SystemExit) as exit:
        main(["nonsense"])
    assert exit.value.code == 2 and "invalid choice" in capsys.readouterr().err


# ---- through ./start.sh --dry-run ----------------------------------------------------------------------------


def start_sh(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / "start.sh"), "--dry-run", *args], check=False, capture_output=True,
                          text=True, timeout=60, env=subprocess_env(HF_HUB_CACHE=str(tmp_path / "hub"), **env))


def test_start_sh_serves_in_the_profile_python_names(tmp_path: Path) -> None:
    original = str(checkpoint_folder(tmp_path / "original", ORIGINAL_CONFIG))
    native = str(checkpoint_folder(tmp_path / "native", NATIVE_CONFIG))
    cases = [
        ({"DEEPSEEK_OCR_MODEL_PATH": original}, "profile: remote-code (.venv-remote-code; requirements-remote-code.txt"),
        ({"DEEPSEEK_OCR_MODEL_PATH": native}, "profile: native (.venv; requirements.txt"),
        ({"DEEPSEEK_OCR_MODEL_PATH": native, "DEEPSEEK_OCR_ENGINE": "remote-code"}, "profile: remote-code"),
        ({"DEEPSEEK_OCR_MODEL_PATH": original, "DEEPSEEK_OCR_ENGINE": "vllm"},
         "profile: vllm (.venv-vllm-front; requirements-service.txt"),
    ]
    for env, first_line in cases:
        done = start_sh(tmp_path, **env)
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[0].startswith(first_line), (env, done.stdout)
    # --model is DEEPSEEK_OCR_MODEL_PATH for the question too.
    assert start_sh(tmp_path, "--model", original).stdout.startswith("profile: remote-code")


def test_start_sh_asks_with_the_system_python_before_any_virtual_environment(tmp_path: Path) -> None:
    """PYTHON is an interpreter without site-packages (-S): no pydantic, no transformers, as a bare python3."""
    bare = tmp_path / "bare-python3"
    bare.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    bare.chmod(0o755)
    original = str(checkpoint_folder(tmp_path / "original", ORIGINAL_CONFIG))
    done = start_sh(tmp_path, DEEPSEEK_OCR_MODEL_PATH=original, PYTHON=str(bare))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("profile: remote-code")


def test_start_sh_asks_nothing_when_the_profile_is_given_or_for_tests(tmp_path: Path) -> None:
    original = str(checkpoint_folder(tmp_path / "original", ORIGINAL_CONFIG))
    for args, expected in ((("--profile", "vllm"), "profile: vllm"), (("test", "-q"), "profile: native")):
        done = start_sh(tmp_path, *args, DEEPSEEK_OCR_MODEL_PATH=original, PYTHON="false")
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(expected)


def test_start_sh_stops_when_python_cannot_answer(tmp_path: Path) -> None:
    done = start_sh(tmp_path, PYTHON=str(tmp_path / "no-such-python"))
    assert done.returncode != 0
    assert "profile:" not in done.stdout and "no-such-python" in done.stderr
