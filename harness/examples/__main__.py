"""``python -m harness.examples NAME... -o DIR``: write example ONNX models."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from harness.examples.mlperf_tiny import EXAMPLES, write_example


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.examples",
        description="Write MLPerf Tiny reference architectures (random weights) as ONNX.",
    )
    parser.add_argument(
        "names",
        nargs="+",
        metavar="NAME",
        choices=[*EXAMPLES, "all"],
        help=f"one of: {', '.join(EXAMPLES)}, or all",
    )
    parser.add_argument("-o", "--output-dir", required=True, help="directory to write into")
    parser.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    args = parser.parse_args(argv)
    names = list(EXAMPLES) if "all" in args.names else list(dict.fromkeys(args.names))
    for name in names:
        print(write_example(name, args.output_dir, seed=args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
