"""Helpers shared by the benchmark scripts: machine facts, precision settings, timing, peak memory, output.

Peak memory on CPU is read as the peak resident set size of a *fresh* process per configuration: inside one
long-lived process the high-water mark of the first, largest configuration would hide every later one, and
the allocator keeps freed pages. The peak is VmHWM from /proc/self/status rather than
``getrusage(RUSAGE_SELF).ru_maxrss``, because Linux carries the launching process's peak into a child's
ru_maxrss at exec (both are recorded). Each probe process prints one JSON line on stdout, which
``run_probes`` collects.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
GIB = 1024**3


# ----------------------------------------------------------------------------------------------------------
# Machine
# ----------------------------------------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else whatever ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


BF16_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_flags(wanted: Sequence[str] = BF16_FLAGS) -> list[str]:
    """Which of the instruction-set flags that decide bf16 speed the CPU advertises (empty off Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return [f for f in wanted if f in flags]
    except OSError:
        pass
    return []


def load_average() -> list[float] | None:
    """1, 5 and 15-minute load averages (runnable processes), None where the OS does not report them."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def machine_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "cpu_flags": cpu_flags(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "device": str(device),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        # Other processes competing for the cores slow every timing down: record how busy the machine was.
        "load_average_at_start": load_average(),
    }
    if device.type == "cuda":
        info["gpu_model"] = torch.cuda.get_device_name(device)
        info["cuda_version"] = torch.version.cuda
    return info


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda was asked for but torch sees no CUDA device")
    return device


# ----------------------------------------------------------------------------------------------------------
# Precision settings
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Precision:
    """One numeric configuration: float32 weights always; optional bf16 autocast and channels_last layout."""

    name: str
    bf16_autocast: bool
    channels_last: bool
    description: str

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        # Same context Lightning's precision="bf16-mixed" enters around the training step.
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.bf16_autocast)

    def layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def prepare(self, net: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        net = net.to(device)
        return net.to(memory_format=torch.channels_last) if self.channels_last else net


PRECISIONS: dict[str, Precision] = {
    "fp32": Precision("fp32", False, False, "float32, contiguous (NCHW) layout"),
    "bf16": Precision("bf16", True, True, "bf16-mixed autocast (float32 weights) + channels_last layout"),
}


# ----------------------------------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock intervals cover the computation and not only its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[Any, float]:
    """(fn(), seconds of wall-clock time it took, device work included)."""
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    return result, time.perf_counter() - start


def repeat_timed(fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int) -> list[float]:
    """Seconds of each of ``repeats`` calls of fn after ``warmup`` untimed ones (allocator, oneDNN caches)."""
    for _ in range(warmup):
        fn()
    return [timed(fn, device)[1] for _ in range(repeats)]


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


# ----------------------------------------------------------------------------------------------------------
# Peak memory
# ----------------------------------------------------------------------------------------------------------


def ru_maxrss_bytes() -> int:
    """``getrusage(RUSAGE_SELF).ru_maxrss`` in bytes (it is in KiB on Linux, in bytes on macOS).

    On Linux this is *not* the peak of the current program alone: at exec the kernel folds the parent's peak
    RSS into it (a child of a 6 GiB process reports at least 6 GiB), so ``peak_rss_bytes`` prefers VmHWM.
    """
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def peak_rss_bytes() -> int:
    """Peak resident set size of this program since it started: VmHWM of /proc/self/status (Linux, reset at
    exec), else ru_maxrss."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # reported in kB
    except OSError:
        pass
    return ru_maxrss_bytes()


def emit_probe_result(result: dict[str, Any]) -> None:
    """The one line a probe process writes on stdout; ``run_probes`` reads the last line."""
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


def run_probe(module: str, argv: Sequence[str], timeout: float = 3600) -> dict[str, Any]:
    """Run ``python -m module *argv`` in a fresh process from the repo root; its last stdout line as JSON."""
    python_path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": python_path}
    proc = subprocess.run([sys.executable, "-m", module, *argv], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"memory probe {' '.join(argv)} failed (exit {proc.returncode}):\n"
                           f"{proc.stderr[-2000:]}")
    return json.loads(lines[-1])


def run_probes(module: str, argvs: Sequence[Sequence[str]], jobs: int = 1) -> list[dict[str, Any]]:
    """Run several probes, ``jobs`` at a time (each process's peak RSS is its own, so overlap is harmless for
    memory; it only slows each probe down, which the probes do not measure)."""
    if jobs <= 1:
        return [run_probe(module, argv) for argv in argvs]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(lambda argv: run_probe(module, argv), argvs))


# ----------------------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------------------


def write_json(path: str | Path, data: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, allow_nan=True) + "\n")
    return path


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub markdown table with every column padded to its widest cell (readable as plain text too)."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"

    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Temporarily use ``threads`` intra-op threads (None: leave torch's default)."""
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ----------------------------------------------------------------------------------------------------------
# Small pieces every speed script uses
# ----------------------------------------------------------------------------------------------------------


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is missing or zero (a speedup that was not measured)."""
    return numerator / denominator if numerator and denominator else None


def format_cell(value: float | None, spec: str) -> str:
    """A table cell: the value formatted, or "-" when it was not measured."""
    return "-" if value is None else format(value, spec)


def speed_main(
    argv: list[str] | None,
    *,
    parse_args: Callable[[list[str] | None], Any],
    resolve_settings: Callable[[Any], dict[str, int]],
    probe_main: Callable[[Any, dict[str, int], torch.device], None],
    benchmark: Callable[[Any, dict[str, int], torch.device], dict[str, Any]],
    format_report: Callable[[dict[str, Any]], str],
    default_out: Path,
    quick_out: Path,
) -> dict[str, Any]:
    """The command line of a speed script: parse, then either run one memory probe (``--probe``, in a fresh
    process started by ``run_probes``) or the whole benchmark, write the JSON and print the report."""
    args = parse_args(argv)
    settings = resolve_settings(args)
    device = pick_device(args.device)
    with torch_threads(args.threads):
        if args.probe:
            probe_main(args, settings, device)
            return {}
        result = benchmark(args, settings, device)
    out = args.out or (quick_out if args.quick else default_out)
    write_json(out, result)
    print(format_report(result))
    print(f"\nwrote {out}")
    return result
