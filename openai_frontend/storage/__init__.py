"""Where the Files API and the video jobs keep their state: SQLite or PostgreSQL, a directory or S3.

The embedded default (SQLite + a local directory) needs no server; PostgreSQL and an
S3-compatible bucket let several shim replicas share files and jobs (README "Several
replicas: S3 and PostgreSQL").
"""
