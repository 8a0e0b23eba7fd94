"""Sample a process with py-spy during a speed run and name where its time goes.

``--profile`` in ``make bench-cache`` records our cache service, and the GPTCache
runner records itself, during one extra run with the most clients after the
measured runs, because py-spy pauses the process at each sample. py-spy comes from
``.venv-bench``. The summary is the share of samples per innermost function, with
line numbers dropped. Samples include threads that wait inside C code (a lock, a
connection pool), so a large share can mean waiting rather than CPU use. This
module imports only the standard library, because the runner imports it too.
"""

from __future__ import annotations

import signal
import subprocess
from collections import Counter
from pathlib import Path

SAMPLES_PER_S = 200
TOP_FUNCTIONS = 8


def start_profile(
    py_spy: Path, pid: int, out_path: Path, duration_s: int
) -> subprocess.Popen[bytes]:
    """Start py-spy recording ``pid`` for ``duration_s`` seconds into ``out_path``.

    The output is py-spy's raw format: one line per distinct stack, the frames
    joined by ``;`` and then the sample count.
    """
    command = [
        str(py_spy),
        "record",
        "--format",
        "raw",
        "--rate",
        str(SAMPLES_PER_S),
        "--duration",
        str(duration_s),
        "--pid",
        str(pid),
        "--output",
        str(out_path),
    ]
    return subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def summarize_profile(raw_text: str, top: int = TOP_FUNCTIONS) -> list[list[object]]:
    """Return ``[function, share of samples]`` for the most sampled innermost frames.

    A frame reads like ``Session.run (onnxruntime/capi/file.py:406)``, and the
    line number is dropped so that one function sums over its lines.
    """
    counts: Counter[str] = Counter()
    total = 0
    for line in raw_text.splitlines():
        stack, _, count_text = line.rstrip().rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        innermost = stack.split(";")[-1]
        name, _, location = innermost.partition(" (")
        source = location.rsplit(":", 1)[0]
        counts[f"{name} ({source})"] += count
        total += count
    if total == 0:
        return []
    return [[name, round(count / total, 4)] for name, count in counts.most_common(top)]


def finish_profile(
    process: subprocess.Popen[bytes], out_path: Path
) -> list[list[object]]:
    """Stop py-spy, then summarize its output; empty if it failed.

    py-spy writes its output when it receives SIGINT, so the samples end with the
    measured run instead of running on for the full duration.
    """
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return []
    if not out_path.exists():
        return []
    return summarize_profile(out_path.read_text(encoding="utf-8", errors="replace"))
