"""``python -m harness.devices.emulator``: run one emulated phone in the foreground."""

from __future__ import annotations

import argparse
import logging
import sys

from harness.errors import EdgefarmError

from .isa import ISAS
from .phone import serve
from .profiles import DEFAULT_PROFILE, PROFILES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.devices.emulator",
        description="An emulated Android phone that speaks ADB over TCP (adb tcpip mode).",
    )
    parser.add_argument("--port", type=int, default=5555, help="TCP port (0 picks a free one)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--profile", default=DEFAULT_PROFILE, choices=sorted(PROFILES))
    parser.add_argument("--root", default=None, help="the phone's filesystem (default: temp)")
    parser.add_argument(
        "--refuse-new-keys",
        action="store_true",
        help="refuse hosts whose key is not already authorized",
    )
    parser.add_argument("--no-auth", action="store_true", help="accept clients without keys")
    parser.add_argument("--quota-bytes", type=int, default=None, help="disk quota for pushes")
    parser.add_argument(
        "--isolation",
        default="namespace",
        choices=["namespace", "auto", "rewrite"],
        help="namespace: confine shell commands, refuse to start if that is impossible "
        "(default); auto: confine where the kernel allows, else rewrite; rewrite: run them "
        "unconfined with literal /data, /sdcard and /sys paths rewritten",
    )
    parser.add_argument(
        "--isa",
        default=None,
        choices=list(ISAS),
        help="what its programs are built for: host, or arm64 (run under qemu-user); "
        "default: the profile's",
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        serve(
            args.port,
            args.profile,
            args.root,
            not args.refuse_new_keys,
            host=args.host,
            require_auth=not args.no_auth,
            quota_bytes=args.quota_bytes,
            isolation=args.isolation,
            isa=args.isa,
        )
    except EdgefarmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
