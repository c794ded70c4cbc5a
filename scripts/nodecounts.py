"""The measuring scripts' `--nodes 1,2,3,4` argument: `node_counts(parser, text)` -> the sorted counts, each 1-4,
or the parser's one-line usage error naming the value."""

from __future__ import annotations

import argparse


def node_counts(ap: argparse.ArgumentParser, text: str) -> list[int]:
    """The distinct node counts in `text` (comma-separated, each 1-4), sorted; `ap.error` otherwise."""
    try:
        ns = sorted({int(x) for x in text.split(",")})
    except ValueError:
        ap.error(f"--nodes {text!r}: expected node counts 1-4 separated by commas, e.g. 1,2,3,4")
    if not ns or ns[0] < 1 or ns[-1] > 4:
        ap.error(f"--nodes {text!r}: each node count must be 1-4")
    return ns
