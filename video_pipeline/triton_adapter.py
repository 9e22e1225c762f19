"""The only module that touches Triton's python-backend utilities.

A Triton ``model.py`` subclasses :class:`StepModel` and names a *step*: a plain
callable taking ``{tensor name: numpy array or None}`` and returning
``{tensor name: numpy array}``. The adapter reads and validates inputs against
:mod:`video_pipeline.contract`, runs the step per request and turns typed errors
into per-request Triton errors, so one bad request never fails its batch.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils  # injected by the stub

from video_pipeline.contract import MODELS, ModelContract
from video_pipeline.errors import PipelineError

logger = logging.getLogger(__name__)

Inputs = dict[str, "np.ndarray | None"]
Outputs = dict[str, np.ndarray]


def model_parameters(args: dict[str, Any]) -> dict[str, str]:
    """``parameters`` of config.pbtxt as plain strings."""
    config = json.loads(args["model_config"])
    return {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}


def triton_error(exc: BaseException) -> Any:
    """A TritonError with the code our typed error maps to; unexpected errors stay generic."""
    if isinstance(exc, PipelineError):
        code = getattr(pb_utils.TritonError, exc.triton_code, pb_utils.TritonError.INTERNAL)
        return pb_utils.TritonError(str(exc), code)
    return pb_utils.TritonError(f"internal error ({type(exc).__name__})", pb_utils.TritonError.INTERNAL)


def read_inputs(request: Any, contract: ModelContract) -> Inputs:
    inputs: Inputs = {}
    for spec in contract.inputs:
        tensor = pb_utils.get_input_tensor_by_name(request, spec.name)
        inputs[spec.name] = None if tensor is None else tensor.as_numpy()
    return inputs


def make_response(outputs: Outputs, contract: ModelContract) -> Any:
    tensors = []
    for spec in contract.outputs:
        arr = outputs[spec.name]
        if spec.dtype == "TYPE_STRING":
            arr = np.asarray(arr, dtype=np.object_)
        tensors.append(pb_utils.Tensor(spec.name, arr))
    return pb_utils.InferenceResponse(output_tensors=tensors)


class StepModel:
    """Base for non-decoupled models: one step call per request."""

    #: name of the model in video_pipeline.contract.MODELS
    contract_name: str = ""

    def make_step(self, params: dict[str, str]) -> Callable[[Inputs], Outputs]:
        raise NotImplementedError

    def initialize(self, args: dict[str, Any]) -> None:
        logging.basicConfig(level=logging.INFO)
        self.contract = MODELS[self.contract_name]
        try:
            self.step = self.make_step(model_parameters(args))
        except PipelineError as exc:
            # A bad configuration fails the model load, loudly.
            raise pb_utils.TritonModelException(f"{self.contract_name}: {exc}") from None

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            try:
                outputs = self.step(read_inputs(request, self.contract))
                responses.append(make_response(outputs, self.contract))
            except Exception as exc:  # noqa: BLE001 - every failure becomes this request's error
                if not isinstance(exc, PipelineError):
                    logger.exception("%s: unexpected error", self.contract_name)
                responses.append(pb_utils.InferenceResponse(error=triton_error(exc)))
        return responses

    def finalize(self) -> None:
        pass
