"""Blobs in an S3-compatible bucket (AWS S3, MinIO, Ceph RGW, moto): ``<prefix>blobs/<sha256>``.

Keys are the content's sha256, so identical uploads share one object and an object never
changes once written. An upload is staged on local disk first (hashed and probed with PyAV
while it streams in: the key is only known at its end, and a file that is not the media it
claims never reaches the bucket); then ``HeadObject`` skips bytes the bucket has already, and
anything else goes up as a multipart upload read from the staged file part by part (at most
``s3_part_bytes`` x 4 in memory). An interrupted multipart upload is never an object, so no
partial file is ever listed (a bucket lifecycle rule ``AbortIncompleteMultipartUpload``
reclaims the parts).

Reads: ``GET /v1/files/{id}/content`` streams a ranged ``GetObject`` to the client. The
decoder reads a local copy: :meth:`S3Blobs.path` downloads the object once, streamed to disk
and checked against its sha256, into a read-through cache under the Files directory (LRU,
``s3_cache_bytes``), which is where tritonserver's video_decoder reads uploaded videos by path
(``triton_files_dir``), exactly as for the embedded store; the shim never holds the object in
memory. Anything the bucket answers with other than "no such key" is a 503 naming the bucket.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openai_frontend.storage.db import StoreUnavailable

logger = logging.getLogger(__name__)

_CHUNK = 1024 * 1024
# A cached copy read this recently may be open in the decoder right now: never evicted.
_CACHE_GRACE_S = 600.0


@dataclass(frozen=True)
class S3Config:
    """Where the bucket is; credentials come from the usual AWS environment (AWS_ACCESS_KEY_ID, ...)."""

    bucket: str
    prefix: str = ""
    endpoint_url: str = ""
    region: str = ""
    part_bytes: int = 16 * 1024 * 1024


class S3Objects:
    """Objects under one prefix of one bucket: the boto3 calls the stores need, errors mapped."""

    def __init__(self, config: S3Config) -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.config = config
        where = f" at {config.endpoint_url}" if config.endpoint_url else ""
        self.name = f"the S3 file store (bucket {config.bucket}{where})"
        self.client = boto3.session.Session().client(
            "s3", endpoint_url=config.endpoint_url or None, region_name=config.region or None,
            config=Config(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=5, read_timeout=60,
                          signature_version="s3v4", s3={"addressing_style": "path"}))
        self._transfer = TransferConfig(multipart_threshold=config.part_bytes, multipart_chunksize=config.part_bytes,
                                        max_concurrency=4, use_threads=True)

    def key(self, name: str) -> str:
        return self.config.prefix + name

    def check_bucket(self) -> None:
        """At start: a missing or forbidden bucket is a misconfiguration (refused, naming the setting); an
        unreachable endpoint is not (requests answer 503 until it is back)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_bucket(Bucket=self.config.bucket)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            raise ValueError(f"setting s3_bucket: {self.name} answered {code or exc}") from None
        except BotoCoreError as exc:
            logger.warning("files: %s is unreachable at start (%s); requests that need it answer 503", self.name,
                           exc)

    def exists(self, name: str) -> bool:
        """HeadObject: whether the object is there."""
        try:
            with self._errors():
                self.client.head_object(Bucket=self.config.bucket, Key=self.key(name))
        except FileNotFoundError:
            return False
        return True

    def upload(self, path: Path, name: str) -> None:
        """A multipart upload of a local file, read part by part (one PUT below ``part_bytes``)."""
        with self._errors():
            self.client.upload_file(str(path), self.config.bucket, self.key(name), Config=self._transfer)

    def put(self, data: bytes, name: str) -> None:
        with self._errors():
            self.client.put_object(Bucket=self.config.bucket, Key=self.key(name), Body=data)

    def compose(self, sources: list[str], name: str) -> None:
        """Object ``name`` made in the bucket of the objects ``sources``, in order: one multipart upload whose
        parts are UploadPartCopy of each (no byte passes through here). S3's part rules apply to the sources
        (all but the last at least 5 MiB, each at most 5 GiB, at most 10,000); an interrupted one is aborted."""
        bucket, key = self.config.bucket, self.key(name)
        with self._errors():
            upload_id = self.client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        try:
            parts = []
            for number, source in enumerate(sources, 1):
                with self._errors():
                    copied = self.client.upload_part_copy(Bucket=bucket, Key=key, UploadId=upload_id,
                                                          PartNumber=number,
                                                          CopySource={"Bucket": bucket, "Key": self.key(source)})
                parts.append({"PartNumber": number, "ETag": copied["CopyPartResult"]["ETag"]})
            with self._errors():
                self.client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id,
                                                      MultipartUpload={"Parts": parts})
        except BaseException:
            try:
                self.client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            except Exception:  # the bucket's lifecycle rule reclaims what an abort could not
                logger.warning("s3: aborting the multipart upload of %s failed", key, exc_info=True)
            raise

    def delete(self, name: str) -> None:
        with self._errors():
            self.client.delete_object(Bucket=self.config.bucket, Key=self.key(name))

    def read(self, name: str, start: int | None = None, end: int | None = None) -> Iterator[bytes]:
        """The object's bytes ``start..end`` (inclusive; all when None), streamed in 1 MiB chunks. The request
        is made before this returns, so a missing object is a FileNotFoundError here, not mid-stream."""
        args: dict[str, Any] = {"Bucket": self.config.bucket, "Key": self.key(name)}
        if start is not None:
            args["Range"] = f"bytes={start}-{'' if end is None else end}"
        with self._errors():
            body = self.client.get_object(**args)["Body"]
        return self._chunks(body)

    def _chunks(self, body: Any) -> Iterator[bytes]:
        try:
            with self._errors():
                yield from body.iter_chunks(_CHUNK)
        finally:
            body.close()

    def listing(self, under: str) -> Iterator[tuple[str, float]]:
        """(name below ``under``, last modified as a Unix time) of every object there."""
        paginator = self.client.get_paginator("list_objects_v2")
        with self._errors():
            for page in paginator.paginate(Bucket=self.config.bucket, Prefix=self.key(under)):
                for obj in page.get("Contents", []):
                    yield obj["Key"][len(self.key(under)):], obj["LastModified"].timestamp()

    def _errors(self) -> Any:
        return _mapped(self.name)


class _mapped:
    """"No such key" becomes FileNotFoundError; anything else boto3 raises, a 503 naming the store."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> bool:
        if exc is None:
            return False
        from botocore.exceptions import BotoCoreError, ClientError

        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            if error.get("Code") in ("404", "NoSuchKey", "NotFound"):
                raise FileNotFoundError(error.get("Message") or "no such key") from None
            raise StoreUnavailable(self.name, f"{error.get('Code', '')} {error.get('Message', '')}") from None
        if isinstance(exc, BotoCoreError):
            raise StoreUnavailable(self.name, exc) from None
        return False


@dataclass(frozen=True)
class S3Reader:
    """A stored object as ``GET .../content`` streams it."""

    objects: S3Objects
    name: str
    size: int

    def open(self, start: int, end: int) -> Iterator[bytes]:
        """Bytes ``start..end`` (inclusive); FileNotFoundError when the object is gone."""
        return self.objects.read(self.name, start, end)


class S3Blobs:
    """The Files API's blobs in a bucket, with a local read-through cache; see the module docstring."""

    def __init__(self, objects: S3Objects, root: str | Path, *, cache_bytes: int, clock: Any = time.time) -> None:
        self.objects = objects
        self.name = objects.name
        self.root = Path(root)
        self._tmp = self.root / "tmp"
        self._cache = self.root / "s3-cache"
        self._tmp.mkdir(parents=True, exist_ok=True)
        self._cache.mkdir(parents=True, exist_ok=True)
        self.cache_bytes = cache_bytes
        self._clock = clock
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    def staging_dir(self) -> Path:
        return self._tmp

    def prepare(self, sha256: str, path: Path) -> None:
        """Before the metadata transaction (which must stay short): HeadObject, and upload when missing."""
        if not self.objects.exists(_name(sha256)):
            self.objects.upload(path, _name(sha256))

    def land(self, sha256: str, path: Path) -> None:
        """Inside the transaction holding the sha's lock: the object exists (uploaded again only if a delete
        raced :meth:`prepare`); the staged file becomes the cached copy."""
        if not self.objects.exists(_name(sha256)):
            self.objects.upload(path, _name(sha256))
        cached = self._cached(sha256)
        cached.parent.mkdir(exist_ok=True)
        os.replace(path, cached)

    def drop(self, sha256: str) -> None:
        self.objects.delete(_name(sha256))
        self._cached(sha256).unlink(missing_ok=True)

    def has(self, sha256: str) -> bool:
        return self.objects.exists(_name(sha256))

    def path(self, sha256: str) -> Path:
        """A local copy of the blob (downloaded on first use); a path that does not exist when the object is gone."""
        cached = self._cached(sha256)
        with self._lock_of(sha256):
            if cached.is_file():
                os.utime(cached)  # the cache's LRU clock
                return cached
            try:
                self._download(sha256, cached)
            except FileNotFoundError:
                return cached
        self._trim_cache(keep=cached)
        return cached

    def reader(self, sha256: str, size: int) -> S3Reader:
        return S3Reader(self.objects, _name(sha256), size)

    def listing(self) -> Iterator[tuple[str, float]]:
        """(sha256, last modified) of every blob in the bucket."""
        return self.objects.listing("blobs/")

    def local_files(self) -> list[Path]:
        """What sits in the local cache (tests, and the embedded store's orphan check, read it)."""
        return [p for p in self._cache.rglob("*") if p.is_file()]

    # --- the local cache ------------------------------------------------------------------------------

    def _cached(self, sha256: str) -> Path:
        return self._cache / sha256[:2] / sha256[2:]

    def _lock_of(self, sha256: str) -> threading.Lock:
        with self._locks_lock:
            return self._locks.setdefault(sha256, threading.Lock())

    def _download(self, sha256: str, cached: Path) -> None:
        cached.parent.mkdir(exist_ok=True)
        tmp = cached.parent / f".{cached.name}.{secrets.token_hex(4)}.part"
        digest = hashlib.sha256()
        try:
            with open(tmp, "xb") as f:
                for chunk in self.objects.read(_name(sha256)):
                    f.write(chunk)
                    digest.update(chunk)
            if digest.hexdigest() != sha256:
                raise StoreUnavailable(self.name, f"object blobs/{sha256} does not hash to its name")
            os.replace(tmp, cached)
        finally:
            tmp.unlink(missing_ok=True)

    def _trim_cache(self, keep: Path) -> None:
        files = []
        for p in self.local_files():
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            files.append((st.st_mtime, st.st_size, p))
        total = sum(size for _, size, _ in files)
        recent = self._clock() - _CACHE_GRACE_S
        for mtime, size, p in sorted(files):
            if total <= self.cache_bytes:
                return
            if p == keep or mtime > recent or p.name.startswith("."):
                continue
            p.unlink(missing_ok=True)
            total -= size


def _name(sha256: str) -> str:
    return f"blobs/{sha256}"
