"""Where the bytes of an Upload's parts live until it is completed: beside the file store's blobs.

* :class:`LocalParts`: ``<root>/uploads/<upload id>/<part id>``, each part landed by rename from the store's
  staging directory (same filesystem), so a part is either whole or absent;
* :class:`S3Parts`: one object per part, ``<prefix>uploads/<upload id>/<part id>`` in the store's bucket,
  uploaded from the staged file part by part (never held in memory). One object per part, not the parts of one
  S3 multipart upload: OpenAI's client names the order only when it completes, and S3 fixes a part's place
  when it is sent. At completion the blob is composed from those objects in the bucket (UploadPartCopy), so
  a multi-GB upload is not sent to the bucket twice, when S3's part rules allow it (:func:`composable`).

Every method is blocking; the router calls them through ``asyncio.to_thread``.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from openai_frontend.files.store import fsync_dir
from openai_frontend.storage.db import StoreUnavailable

logger = logging.getLogger(__name__)

_CHUNK = 4 * 1024 * 1024
# S3's rules for the parts of one multipart upload (UploadPartCopy included).
S3_MIN_PART = 5 * 1024 * 1024
S3_MAX_PART = 5 * 1024 * 1024 * 1024
S3_MAX_PARTS = 10_000


class PartStore(Protocol):
    """The bytes of the parts of pending Uploads."""

    name: str

    def put(self, upload_id: str, part_id: str, path: Path) -> None:
        """Keep the staged file ``path`` (consumed) as the part's bytes."""

    def read(self, upload_id: str, part_id: str) -> Iterator[bytes]:
        """The part's bytes, streamed; FileNotFoundError when they are gone."""

    def drop_part(self, upload_id: str, part_id: str) -> None: ...

    def drop(self, upload_id: str) -> None:
        """Every part of the Upload (and anything else kept under its id)."""

    def listing(self) -> Iterator[tuple[str, float]]:
        """(upload id, last modified) of every Upload holding parts here."""

    def compose(self, upload_id: str, parts: list[tuple[str, int]], sha256: str) -> bool:
        """Make the blob ``sha256`` from the parts (id, bytes) in order, inside the store, if that saves sending
        the bytes again; False when the caller must land the assembled file itself."""


class LocalParts:
    """Parts on the local disk of the file store's directory."""

    def __init__(self, root: str | Path) -> None:
        self._root = Path(root) / "uploads"
        self._root.mkdir(parents=True, exist_ok=True)
        self.name = f"the file store directory {Path(root)}"

    def put(self, upload_id: str, part_id: str, path: Path) -> None:
        folder = self._root / upload_id
        folder.mkdir(exist_ok=True)
        os.replace(path, folder / part_id)
        fsync_dir(folder)

    def read(self, upload_id: str, part_id: str) -> Iterator[bytes]:
        f = open(self._root / upload_id / part_id, "rb")  # noqa: SIM115 - closed by the generator
        return _chunks_of(f)

    def drop_part(self, upload_id: str, part_id: str) -> None:
        (self._root / upload_id / part_id).unlink(missing_ok=True)

    def drop(self, upload_id: str) -> None:
        shutil.rmtree(self._root / upload_id, ignore_errors=True)

    def listing(self) -> Iterator[tuple[str, float]]:
        for folder in list(self._root.iterdir()):
            try:
                yield folder.name, folder.stat().st_mtime
            except FileNotFoundError:
                continue

    def compose(self, upload_id: str, parts: list[tuple[str, int]], sha256: str) -> bool:
        return False  # the assembled file is renamed into the blobs: nothing to save


class S3Parts:
    """Parts as objects in the file store's bucket (:class:`~openai_frontend.storage.s3.S3Objects`)."""

    def __init__(self, objects: Any) -> None:
        self.objects = objects
        self.name = objects.name

    def put(self, upload_id: str, part_id: str, path: Path) -> None:
        self.objects.upload(path, _key(upload_id, part_id))
        path.unlink(missing_ok=True)

    def read(self, upload_id: str, part_id: str) -> Iterator[bytes]:
        return self.objects.read(_key(upload_id, part_id))

    def drop_part(self, upload_id: str, part_id: str) -> None:
        self.objects.delete(_key(upload_id, part_id))

    def drop(self, upload_id: str) -> None:
        for name, _ in list(self.objects.listing(f"uploads/{upload_id}/")):  # orphans of a crash included
            self.objects.delete(f"uploads/{upload_id}/{name}")

    def listing(self) -> Iterator[tuple[str, float]]:
        newest: dict[str, float] = {}
        for name, modified in self.objects.listing("uploads/"):
            upload_id = name.split("/", 1)[0]
            newest[upload_id] = max(modified, newest.get(upload_id, 0.0))
        return iter(newest.items())

    def compose(self, upload_id: str, parts: list[tuple[str, int]], sha256: str) -> bool:
        if not composable([size for _, size in parts]):
            return False
        blob = f"blobs/{sha256}"
        if self.objects.exists(blob):
            return True  # identical bytes are stored already
        try:
            self.objects.compose([_key(upload_id, part_id) for part_id, _ in parts], blob)
        except StoreUnavailable as exc:  # a store without UploadPartCopy, say: send the bytes instead
            logger.warning("uploads: composing %s in the bucket failed (%s); uploading the assembled file", upload_id,
                           exc)
            return False
        return True


def composable(sizes: list[int]) -> bool:
    """Whether S3 takes these parts, in this order, as the parts of one multipart upload: every part but the
    last at least 5 MiB, none over 5 GiB, at most 10,000 of them."""
    return (0 < len(sizes) <= S3_MAX_PARTS and all(s >= S3_MIN_PART for s in sizes[:-1])
            and all(0 < s <= S3_MAX_PART for s in sizes))


def part_store_for(blobs: Any) -> PartStore:
    """The parts' home beside the file store's ``blobs``: their bucket, or their directory."""
    objects = getattr(blobs, "objects", None)
    if objects is not None:
        return S3Parts(objects)
    return LocalParts(blobs.root)


def _key(upload_id: str, part_id: str) -> str:
    return f"uploads/{upload_id}/{part_id}"


def _chunks_of(f: Any) -> Iterator[bytes]:
    with f:
        while chunk := f.read(_CHUNK):
            yield chunk

