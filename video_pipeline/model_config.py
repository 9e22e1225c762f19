"""config.pbtxt read as what it is: a text-format ``inference.ModelConfig`` message.

Parsed with protobuf's ``text_format`` against the ModelConfig proto that tritonclient ships,
so a file reads here exactly as tritonserver reads it (any layout, comments, escapes, field
order), and a misspelt field or a bad value is an error naming the file and line instead of
a pattern that silently stops matching.

The protos come from ``tritonclient.grpc``, imported on first use only: the models' stubs
get their config as JSON from Triton and never call this module, and importing
``video_pipeline`` stays free of tritonclient.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from video_pipeline.contract import ModelContract, Tensor

ModelConfig = Any  # tritonclient's inference.ModelConfig; its generated module has no type stubs

CONFIG_FILE = "config.pbtxt"


class ModelConfigError(ValueError):
    """A config.pbtxt that is not a valid ``inference.ModelConfig``."""


def _pb2() -> Any:
    from tritonclient.grpc import model_config_pb2

    return model_config_pb2


def parse(text: str, where: str = CONFIG_FILE) -> ModelConfig:
    """``text`` (config.pbtxt's content) as a ModelConfig message; ModelConfigError naming ``where``."""
    from google.protobuf import text_format

    try:
        return text_format.Parse(text, _pb2().ModelConfig())
    except text_format.ParseError as exc:
        raise ModelConfigError(f"{where}: {exc}") from None


def read(path: str | Path) -> ModelConfig:
    """The ModelConfig of a config.pbtxt file, or of the one inside a model folder."""
    path = Path(path)
    if path.is_dir():
        path = path / CONFIG_FILE
    return parse(path.read_text(), str(path))


def to_text(config: ModelConfig) -> str:
    """``config`` in text format, as config.pbtxt holds it (comments are not kept)."""
    from google.protobuf import text_format

    return text_format.MessageToString(config)


def parameters(config: ModelConfig) -> dict[str, str]:
    """The config's ``parameters`` as plain strings (Triton gives the python backend the same)."""
    return {key: value.string_value for key, value in config.parameters.items()}


def contract_of(config: ModelConfig) -> ModelContract:
    """The public interface ``config`` declares, in :mod:`video_pipeline.contract`'s terms, so a
    test can compare it with the contract as a whole."""
    data_type = _pb2().DataType.Name

    def tensors(specs: Any) -> tuple[Tensor, ...]:
        return tuple(Tensor(s.name, data_type(s.data_type), tuple(s.dims), getattr(s, "optional", False))
                     for s in specs)

    return ModelContract(
        name=config.name,
        inputs=tensors(config.input),
        outputs=tensors(config.output),
        decoupled=config.model_transaction_policy.decoupled,
        backend="" if config.platform == "ensemble" else config.backend,
    )
