"""``vlt``: the command-line client, through the shim's public API only (the OpenAI Python SDK).

    vlt ask VIDEO_OR_URL "question"     upload a local video (progress bar), stream the answer
    vlt files list | delete ID...       the Files API
    vlt generate "prompt" -o out.mp4    create a video job, follow its progress, download it

``--base-url`` (env ``OPENAI_BASE_URL``, default http://127.0.0.1:8080/v1) picks the server;
``OPENAI_API_KEY`` is sent if set (the shim does not check it). Progress goes to stderr,
answers to stdout, so ``vlt ask clip.mp4 "..." > answer.txt`` keeps just the answer.
"""

from __future__ import annotations

import argparse
import io
import json
import mimetypes
import os
import sys
import time
from pathlib import Path
from typing import IO, Any

DEFAULT_BASE_URL = "http://127.0.0.1:8080/v1"
# Media the shim can fetch itself: sent as a URL, not uploaded.
_URL_PREFIXES = ("http://", "https://", "data:", "file://", "file-id://")
_MIB = 1024 * 1024


class CliError(Exception):
    """A failure to report in one line, with exit status 1."""


class Progress:
    """A one-line progress bar on stderr; on a non-terminal, one line per 10% instead of redrawing."""

    def __init__(self, label: str, total: float, unit: str = "%", stream: IO[str] | None = None) -> None:
        self.label = label
        self.total = max(total, 1)
        self.unit = unit
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.started = time.monotonic()
        self._last_step = -1

    def update(self, done: float, note: str = "") -> None:
        fraction = min(max(done / self.total, 0.0), 1.0)
        step = int(fraction * 10)
        if not self.tty and step == self._last_step:
            return
        self._last_step = step
        bar = "#" * int(fraction * 30)
        line = f"{self.label} [{bar:<30}] {fraction * 100:5.1f}%"
        if self.unit == "bytes":
            elapsed = max(time.monotonic() - self.started, 1e-6)
            line += f" {_size(done)}/{_size(self.total)} {_size(done / elapsed)}/s"
        if note:
            line += f" {note}"
        self.stream.write(("\r" + line) if self.tty else line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.2f} GiB"


class ProgressReader(io.RawIOBase):
    """A file opened for reading that reports each read to a :class:`Progress` (the SDK streams it)."""

    def __init__(self, path: Path, progress: Progress) -> None:
        self._file = open(path, "rb")  # noqa: SIM115 - closed by close()
        self._progress = progress
        self.name = str(path)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._file.fileno()  # lets the HTTP client size the body (Content-Length)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def readinto(self, buffer: Any) -> int:
        n = self._file.readinto(buffer)
        if n:
            self._progress.update(self._file.tell())
        return n or 0

    def close(self) -> None:
        self._file.close()
        super().close()


def client_for(args: argparse.Namespace) -> Any:
    import openai

    return openai.OpenAI(base_url=args.base_url, api_key=os.environ.get("OPENAI_API_KEY") or "unused",
                         timeout=args.timeout, max_retries=0)


def upload(client: Any, path: Path, purpose: str = "vision") -> str:
    """Uploads ``path`` to /v1/files with a progress bar; returns the file id."""
    if not path.is_file():
        raise CliError(f"{path}: no such file")
    progress = Progress(f"upload {path.name}", path.stat().st_size, unit="bytes")
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    with ProgressReader(path, progress) as reader:
        record = client.files.create(file=(path.name, reader, mime), purpose=purpose)
    progress.update(path.stat().st_size)
    progress.close()
    return str(record.id)


def default_model(client: Any) -> str:
    models = client.models.list().data
    if not models:
        raise CliError("the server lists no models")
    return str(models[0].id)


def cmd_ask(args: argparse.Namespace) -> int:
    client = client_for(args)
    source = args.video
    uploaded = None
    # A local file wins over a file id of the same spelling (a file named file-1.mp4 in the folder).
    if not source.startswith(_URL_PREFIXES) and (Path(source).is_file() or not source.startswith("file-")):
        uploaded = upload(client, Path(source))
        print(f"uploaded {source} as {uploaded}", file=sys.stderr)
        source = uploaded
    try:
        extra: dict[str, Any] = {}
        video: dict[str, Any] = {}
        if args.num_frames:
            video["num_frames"] = args.num_frames
        if args.fps:
            video["fps"] = args.fps
        if video:
            extra["media_io_kwargs"] = {"video": video}
        messages = [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": source}},
                                                  {"type": "text", "text": args.question}]}]
        model = args.model or default_model(client)
        if args.no_stream:
            r = client.chat.completions.create(model=model, messages=messages, max_tokens=args.max_tokens,
                                               temperature=args.temperature, extra_body=extra)
            print(r.choices[0].message.content or "")
            usage = r.usage
        else:
            stream = client.chat.completions.create(model=model, messages=messages, max_tokens=args.max_tokens,
                                                    temperature=args.temperature, stream=True,
                                                    stream_options={"include_usage": True}, extra_body=extra)
            usage = None
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    sys.stdout.write(chunk.choices[0].delta.content)
                    sys.stdout.flush()
                if chunk.usage:
                    usage = chunk.usage
            sys.stdout.write("\n")
        if usage is not None:
            video_tokens = getattr(usage.prompt_tokens_details, "video_tokens", None)  # ours, beyond OpenAI's
            print(f"[{usage.prompt_tokens} prompt tokens ({video_tokens or 0} video), "
                  f"{usage.completion_tokens} completion tokens]", file=sys.stderr)
    finally:
        if uploaded and not args.keep:
            client.files.delete(uploaded)
    return 0


def cmd_files(args: argparse.Namespace) -> int:
    client = client_for(args)
    if args.files_command == "list":
        rows = list(client.files.list(purpose=args.purpose) if args.purpose else client.files.list())
        if args.json:
            print(json.dumps([r.model_dump() for r in rows], indent=2))
            return 0
        for r in rows:
            created = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created_at))
            print(f"{r.id}\t{r.bytes}\t{created}\t{r.purpose}\t{r.filename}")
        return 0
    if args.files_command == "upload":
        for path in args.paths:
            print(upload(client, Path(path), purpose=args.purpose or "vision"))
        return 0
    failed = 0
    for file_id in args.ids:
        try:
            client.files.delete(file_id)
            print(f"deleted {file_id}")
        except Exception as exc:  # noqa: BLE001 - report each id, go on with the others
            print(f"{file_id}: {_message(exc)}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def cmd_generate(args: argparse.Namespace) -> int:
    client = client_for(args)
    params: dict[str, Any] = {"prompt": args.prompt}
    for name in ("model", "seconds", "size"):
        if getattr(args, name):
            params[name] = getattr(args, name)
    extra = json.loads(args.extra) if args.extra else None
    job = client.videos.create(**params, extra_body=extra)
    print(f"job {job.id}: {job.status}", file=sys.stderr)
    progress = Progress(f"generate {job.id}", 100)
    deadline = time.monotonic() + args.timeout
    while job.status in ("queued", "in_progress"):
        progress.update(float(job.progress or 0), job.status)
        if time.monotonic() > deadline:
            raise CliError(f"job {job.id} still {job.status} after {args.timeout:.0f} s")
        time.sleep(args.poll_interval)
        job = client.videos.retrieve(job.id)
    if job.status != "completed":
        progress.close()
        error = getattr(job, "error", None)
        raise CliError(f"job {job.id} {job.status}: {getattr(error, 'message', None) or error or 'no reason given'}")
    progress.update(100, "completed")
    progress.close()
    out = Path(args.output)
    with client.videos.with_streaming_response.download_content(job.id) as response:
        response.stream_to_file(out)
    print(f"saved {out} ({out.stat().st_size} bytes)", file=sys.stderr)
    return 0


def _message(exc: BaseException) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
    return str(exc) or type(exc).__name__


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vlt", description="Client for the video-llm-triton OpenAI-compatible server.")
    p.add_argument("--base-url", default=os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL,
                   help=f"the server's API root (env OPENAI_BASE_URL, default {DEFAULT_BASE_URL})")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for one request (default 600)")
    sub = p.add_subparsers(dest="command", required=True)

    ask = sub.add_parser("ask", help="ask a question about a video (a local file is uploaded first)")
    ask.add_argument("video", help="a local video file, an http(s)/data: URL, or a file id (file-...)")
    ask.add_argument("question")
    ask.add_argument("--model", help="model name (default: the first one the server lists)")
    ask.add_argument("--max-tokens", type=int, default=256)
    ask.add_argument("--temperature", type=float, default=0.0)
    ask.add_argument("--num-frames", type=int, help="sample exactly this many frames")
    ask.add_argument("--fps", type=float, help="sample this many frames per second")
    ask.add_argument("--no-stream", action="store_true", help="wait for the whole answer")
    ask.add_argument("--keep", action="store_true", help="keep the uploaded file (default: delete it after)")
    ask.set_defaults(run=cmd_ask)

    files = sub.add_parser("files", help="list, upload or delete uploaded files")
    files_sub = files.add_subparsers(dest="files_command", required=True)
    listing = files_sub.add_parser("list", help="list files (id, bytes, created, purpose, filename)")
    listing.add_argument("--purpose")
    listing.add_argument("--json", action="store_true", help="print OpenAI's file objects as JSON")
    up = files_sub.add_parser("upload", help="upload files; prints their ids")
    up.add_argument("paths", nargs="+")
    up.add_argument("--purpose", default="vision")
    delete = files_sub.add_parser("delete", help="delete files by id")
    delete.add_argument("ids", nargs="+")
    files.set_defaults(run=cmd_files)

    gen = sub.add_parser("generate", help="generate a video from a prompt and download it")
    gen.add_argument("prompt")
    gen.add_argument("-o", "--output", required=True, help="where to save the video (e.g. out.mp4)")
    gen.add_argument("--model")
    gen.add_argument("--seconds")
    gen.add_argument("--size", help="WIDTHxHEIGHT")
    gen.add_argument("--extra", help="more request fields as a JSON object (sent as extra_body)")
    gen.add_argument("--poll-interval", type=float, default=0.5, help="seconds between progress checks")
    gen.set_defaults(run=cmd_generate)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        return 130
    except CliError as exc:
        print(f"vlt: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - an API or connection error: one line, not a traceback
        import openai

        if isinstance(exc, openai.APIError):
            print(f"vlt: {_message(exc)}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
