"""Print the method names of a decode or rescoring config, space-separated (for the recipe shell).

    python -m asrllm.bin.list_methods conf/decode_fusion.yaml [--one]

`--one`: the config must have exactly one method (e.g. the N-best config of stage 11).
"""

from __future__ import annotations

import argparse
import sys

from asrllm.config import ConfigError, load_yaml


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="decode or rescoring YAML with a `methods` mapping")
    parser.add_argument("--one", action="store_true", help="require exactly one method")
    args = parser.parse_args(argv)
    try:
        methods = load_yaml(args.config).get("methods")
        if not isinstance(methods, dict) or not methods:
            raise ConfigError(f"{args.config}: no methods")
        if args.one and len(methods) != 1:
            raise ConfigError(f"{args.config}: must have exactly one method, not {sorted(methods)}")
    except (ConfigError, OSError) as e:
        print(f"list_methods: {e}", file=sys.stderr)
        return 1
    print(*methods)
    return 0


if __name__ == "__main__":
    sys.exit(main())
