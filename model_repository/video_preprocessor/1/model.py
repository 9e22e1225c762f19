"""video_preprocessor: frames -> engine-sized frames + metadata. Logic: video_pipeline.steps.PreprocessorStep."""

from video_pipeline.steps import PreprocessorStep
from video_pipeline.triton_adapter import StepModel


class TritonPythonModel(StepModel):
    contract_name = "video_preprocessor"

    def make_step(self, params):
        return PreprocessorStep(params)
