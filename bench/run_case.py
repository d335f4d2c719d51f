"""Run one benchmark case in this process and print its figures as JSON (with peak RSS)."""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path

from bench.cases import CASES


def peak_rss_mb() -> float:
    """This process's own high-water RSS. VmHWM starts afresh at exec; ru_maxrss would carry
    the parent's peak over fork on Linux."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    name, source, scratch = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    scratch.mkdir(parents=True, exist_ok=True)
    figures = CASES[name](source, scratch)
    figures["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
