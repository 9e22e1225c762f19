"""Core of the video inference server: media decoding, preprocessing and engine glue.

Nothing in this package imports Triton's python-backend utilities except
:mod:`video_pipeline.triton_adapter`, so all of it is testable without a server.
"""

__version__ = "0.1.0"
