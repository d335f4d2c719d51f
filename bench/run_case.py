"""Run one benchmark case in this process and print its figures as JSON (with peak RSS)."""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path

from bench.cases import CASES


def main() -> None:
    name, source, scratch = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    scratch.mkdir(parents=True, exist_ok=True)
    figures = CASES[name](source, scratch)
    figures["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
