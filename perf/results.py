"""perf/RESULTS.md is shared by several benchmarks: each owns one `## <name>` section."""

from __future__ import annotations

import re
from pathlib import Path

import psutil

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


# --- processes and their CPU time ---------------------------------------------------------------------


def proc_label(proc: psutil.Process) -> str:
    """A name for a process of our stack: a Python backend stub by its model instance (``llm_0_0``: the
    stub's command line names it), vLLM's processes by the title they set (``VLLM::EngineCore``)."""
    cmd = proc.cmdline()
    if cmd and cmd[0].endswith("triton_python_backend_stub"):
        instance = next((a for a in cmd[3:] if re.fullmatch(r"[A-Za-z][\w-]*_\d+_\d+", a)), "")
        return f"stub {instance or Path(cmd[1]).parent.parent.name}"
    if any("resource_tracker" in a for a in cmd):
        return "resource tracker"
    return (cmd[0].split()[0] if cmd and cmd[0].startswith("VLLM::") else proc.name())[:32]


def cpu_by_role(root_pid: int) -> dict[str, float]:
    """CPU seconds (user + system) spent so far by ``root_pid`` (the shim, with its launcher) and every
    process under it, summed by role: tritonserver, each model's stubs (``llm stubs``), vLLM's processes
    (processes that already exited are not counted). Two readings around a run give its share."""
    root = psutil.Process(root_pid)
    out: dict[str, float] = {}
    for proc in [root, *root.children(recursive=True)]:
        try:
            times = proc.cpu_times()
            label = "shim (+launcher)" if proc.pid == root_pid else proc_label(proc)
        except psutil.Error:
            continue  # exited meanwhile
        if label.startswith("stub "):
            label = re.sub(r"_\d+_\d+$", "", label.removeprefix("stub ")) + " stubs"
        out[label] = out.get(label, 0.0) + times.user + times.system
    return out


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """``after`` - ``before`` per role, largest first."""
    delta = {role: after[role] - before.get(role, 0.0) for role in after}
    return dict(sorted(delta.items(), key=lambda kv: -kv[1]))
