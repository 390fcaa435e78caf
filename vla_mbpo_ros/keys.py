"""Checkpoint signing keys (core.policy.signing): create a pair, show a public key's id.

    python -m vla_mbpo_ros.keys generate --out ~/.config/vla_mbpo_ros/keys   # on the training server
    python -m vla_mbpo_ros.keys show ~/.config/vla_mbpo_ros/keys/checkpoint_signing.pub

The private key (``checkpoint_signing.key``, mode 0600) stays on the training server: the world-model
node's ``checkpoint_signing_key``. Copy only the public key (``checkpoint_signing.pub``) to the robot
workstation: the policy executor's ``trusted_checkpoint_keys``.
"""

from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path

from vla_mbpo_ros.core.policy.signing import TrustedKeys, generate_key_pair


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vla_mbpo_ros.keys", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    generate = commands.add_parser("generate", help="create a new signing key pair in a folder")
    generate.add_argument("--out", type=Path, required=True, help="folder for checkpoint_signing.{key,pub}")
    generate.add_argument("--comment", default=f"trainer@{socket.gethostname()}", help="stored with the public key")
    show = commands.add_parser("show", help="print the id of a public key (as the executor's messages name it)")
    show.add_argument("public_key", help="a .pub file or an 'ed25519 <base64>' line")
    args = parser.parse_args(argv)
    try:
        if args.command == "generate":
            private_path, public_path = generate_key_pair(args.out, args.comment)
            key_id = next(iter(TrustedKeys.load([str(public_path)]).keys))
            print(f"private key (training server only): {private_path}")
            print(f"public key (robot: trusted_checkpoint_keys): {public_path}  id {key_id}")
        else:
            print(next(iter(TrustedKeys.load([args.public_key], "public_key").keys)))
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
