"""A full disk as the client's 507 (issue 20.7), wherever a request writes: an upload landing in the Files API's
store, a multipart request's parts staged under it (chat, videos), a video job's row in the store's database."""

from __future__ import annotations

import errno
import logging
import sqlite3
from typing import Any

from openai_frontend.errors import OpenAIError

logger = logging.getLogger(__name__)

#: A full filesystem or a filesystem quota: the disk's fault, not the request's, and not a 500.
FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def is_full(exc: BaseException) -> bool:
    """ENOSPC, a filesystem quota, or SQLite's "database or disk is full"."""
    return (isinstance(exc, OSError) and exc.errno in FULL_ERRNOS) or (
        isinstance(exc, sqlite3.OperationalError) and "full" in str(exc))


def store_name(store: Any) -> str:
    """How a message names the Files API's store: its blobs' name (a directory, a bucket) or its directory."""
    return getattr(getattr(store, "blobs", None), "name", None) or f"the file store at {store.staging_dir().parent}"


def store_full(exc: BaseException, store: Any = None, *, where: str | None = None,
               refused: str = "file: the upload cannot be stored", param: str | None = "file",
               hint: str = "delete files or try later") -> BaseException:
    """A full disk as a 507 in OpenAI's shape, ``<refused>: <where> is full; <hint>``, where ``where`` (what is
    full: a staging directory, a database) defaults to :func:`store_name` of ``store``; any other error
    unchanged (a 500 whose details stay in the log)."""
    if not is_full(exc):
        return exc
    where = where or store_name(store)
    logger.error("%s: %s is full: %s", refused, where, exc)
    return OpenAIError(507, f"{refused}: {where} is full; {hint}", param=param, code="insufficient_storage")
