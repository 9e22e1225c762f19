"""llm: vLLM's async engine, decoupled. Engine args: model.json beside this file, passed through.
Logic: video_pipeline.llm_handler; a `video` input is decoded by video_media through BLS."""

from pathlib import Path

from video_pipeline.triton_adapter import BlsMedia, DecoupledModel


class TritonPythonModel(DecoupledModel):
    contract_name = "llm"

    def make_handler(self, args, params):
        from video_pipeline.llm_handler import LlmHandler

        return LlmHandler.from_model_dir(Path(args["model_repository"]) / args["model_version"], media=BlsMedia())
