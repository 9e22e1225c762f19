"""Video generation: a diffusers text/image-to-video pipeline behind the ``video_generator`` model.

``params`` (what a request may ask, validated the same way by the shim and the model),
``config`` (``pipeline.json``), ``pipeline`` (loading and running diffusers), ``encode``
(frames -> H.264 mp4), ``handler`` (the model's per-request logic) and ``tiny_wan`` (the
tiny offline pipeline the tests and ``make serve`` use). No Triton, no HTTP.
"""
