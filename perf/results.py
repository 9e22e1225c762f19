"""perf/RESULTS.md is shared by several benchmarks: each owns one `## <name>` section."""

from __future__ import annotations

import re
from pathlib import Path

HEADER = "# Benchmark results\n\nEach section is written by the benchmark named in it; rerun that command to refresh it.\n"


def replace_section(path: Path, name: str, body: str) -> None:
    """Replaces (or appends) the section ``## name`` of ``path``, keeping the others."""
    text = path.read_text() if path.exists() else HEADER
    section = f"## {name}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(name)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _m: section + "\n", text, count=1)
    else:
        text = text.rstrip() + "\n\n" + section
    path.write_text(text.rstrip() + "\n")


def machine_load() -> str:
    """What `uptime` prints (load averages), written beside a benchmark's numbers."""
    import subprocess

    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def publish(name: str, body: str, write: bool = True) -> None:
    """Prints a benchmark's section and, unless ``write`` is false (--no-write), puts it in perf/RESULTS.md."""
    print(body)
    if write:
        replace_section(Path(__file__).resolve().parent / "RESULTS.md", name, body)


# --- CPU time by process ------------------------------------------------------------------------------

_STUB_MODELS = ("video_decoder", "video_preprocessor", "video_media", "video_generator", "llm")


def cpu_by_role(root_pid: int) -> dict[str, float]:
    """CPU seconds (user + system) spent so far by ``root_pid`` and every process under it, summed by
    role: the shim, tritonserver, each Python-backend model's stubs, vLLM's engine core and worker
    (processes that already exited are not counted). Two readings around a run give its share."""
    import os

    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (stat := _stat(int(name))) is not None:
            children.setdefault(int(stat[1]), []).append(int(name))
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    todo = [root_pid]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        stat = _stat(pid)
        if stat is None:
            continue
        role = _role(pid)
        out[role] = out.get(role, 0.0) + (int(stat[11]) + int(stat[12])) / tick
    return out


def _stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name (field 3 on: state, ppid, ...), None when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _role(pid: int) -> str:
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return "gone"
    line = " ".join(args)
    if line.startswith("VLLM::"):
        return "vLLM " + line.split()[0].removeprefix("VLLM::")
    if "backend_stub" in args[0]:
        named = [m for m in _STUB_MODELS if any(f"/{m}/" in a or a.startswith(f"{m}_") for a in args)]
        return f"{named[0]} stubs" if named else "Python stubs"
    if args[0].endswith("tritonserver"):
        return "tritonserver"
    if "openai_frontend" in line:
        return "shim (+launcher)"
    if "vllm" in line:
        return "vLLM API server"
    return Path(args[0]).name or "other"


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """``after`` - ``before`` per role, largest first."""
    delta = {role: after[role] - before.get(role, 0.0) for role in after}
    return dict(sorted(delta.items(), key=lambda kv: -kv[1]))
