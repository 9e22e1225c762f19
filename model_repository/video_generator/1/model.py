"""video_generator: a diffusers text/image-to-video pipeline, decoupled (progress, then the mp4).
Pipeline and its arguments: pipeline.json beside this file, passed through.
Logic: video_pipeline.generation.handler."""

from pathlib import Path

from video_pipeline.triton_adapter import DecoupledModel


class TritonPythonModel(DecoupledModel):
    contract_name = "video_generator"

    def make_handler(self, args, params):
        from video_pipeline.generation.handler import GeneratorHandler

        return GeneratorHandler.from_model_dir(Path(args["model_repository"]) / args["model_version"])
