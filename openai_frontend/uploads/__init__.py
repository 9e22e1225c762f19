"""OpenAI's Uploads API (``/v1/uploads``): a large file sent in parts, then completed into a Files API file.

An Upload's state (its declared size, status, parts) lives in the file store's database, next to the
``files`` table (the embedded SQLite file, or PostgreSQL shared by replicas); its parts' bytes live where the
store keeps blobs (``<files_dir>/uploads/<upload id>/<part id>``, or ``uploads/...`` objects in the S3
bucket), so any replica can take any part, and complete or cancel an Upload another replica created.
See :mod:`openai_frontend.uploads.store` for the rules and :mod:`openai_frontend.uploads.parts` for the bytes.
"""
