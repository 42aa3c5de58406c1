"""`python -m edgekit.bench.worker PACKAGE …`: measure in a fresh process and print JSON (one package)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from edgekit.bench.harness import measure
from edgekit.errors import EdgekitError


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("package")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args()
    try:
        result = measure(args.package, args.threads, args.batch, args.runs, args.warmup)
    except EdgekitError as error:
        print(json.dumps({"error": str(error)}))
        return 1
    print(json.dumps(dataclasses.asdict(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
