"""`python -m mesh.auth token [--user NAME] [--ttl SECONDS]` (`make token user=NAME`): print a
development token the gateway accepts, signed with the run folder's key (made if missing)."""

from __future__ import annotations

import argparse
import sys

from mesh.auth import tokens
from mesh.runner import topology

DEFAULT_USER = "developer"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mesh.auth", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    token = commands.add_parser("token", help="print a development token (stdout: the token only)")
    token.add_argument("--user", default=DEFAULT_USER, help=f"the token's subject (default {DEFAULT_USER})")
    token.add_argument("--ttl", type=int, default=tokens.DEFAULT_TTL,
                       help=f"seconds it is valid, 1 to {tokens.MAX_TTL} (default {tokens.DEFAULT_TTL})")
    args = parser.parse_args(argv)
    try:
        key = tokens.SigningKey.load_or_create(topology.auth_dir(topology.run_dir_from_env()))
        print(tokens.mint(key, args.user, args.ttl))
    except (ValueError, tokens.KeyFileError) as error:
        print(f"token: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
