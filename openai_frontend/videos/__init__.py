"""Video generation for /v1/videos: reading a request (``requests``), the job store (SQLite + mp4 files
beside the Files API's, ``store``), the queue that runs jobs (``jobs``), and the backend on tritonserver's
``video_generator`` model (``backend``)."""
