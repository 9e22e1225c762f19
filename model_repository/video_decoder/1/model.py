"""video_decoder: container bytes -> sampled RGB frames. Logic: video_pipeline.steps.DecoderStep."""

from video_pipeline.steps import DecoderStep
from video_pipeline.triton_adapter import CacheMetrics, StepModel


class TritonPythonModel(StepModel):
    contract_name = "video_decoder"

    def make_step(self, params):
        return DecoderStep(params, observer=CacheMetrics(self.contract_name))
