#!/usr/bin/env python3
"""Validates Kubernetes objects against the official OpenAPI schemas, as the apiserver would.

Reads a JSON list of {"name": ..., "object": {...}, "strict": true|false} on stdin and prints one line per
invalid object. Strict mode rejects unknown fields. Exit status 1 when any object is invalid, 2 when the
validator is missing. Used by the Rust tests; install with `pip install kubernetes-validate` (.ci/run does).
"""
import json
import sys

try:
    import kubernetes_validate
except ImportError:
    print("kubernetes-validate is not installed: pip install kubernetes-validate", file=sys.stderr)
    sys.exit(2)

VERSION = "1.33.0"


def main():
    cases = json.load(sys.stdin)
    failed = 0
    for case in cases:
        try:
            kubernetes_validate.validate(case["object"], VERSION, case.get("strict", True))
        except kubernetes_validate.ValidationError as e:
            failed += 1
            path = "/".join(str(p) for p in e.path)
            print(f"{case['name']}: {e.message} at /{path}")
        except Exception as e:  # a schema the validator lacks, or a malformed object
            failed += 1
            print(f"{case['name']}: {type(e).__name__}: {e}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
