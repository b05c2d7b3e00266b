"""``python -m bench department``: the department list import bench (``bench/department_import.py``).

The bench lives in ``department_import`` beside the helpers it needs; this module gives it the
short name ``python -m bench`` finds it by (a module with ``main``), so it runs once in a full
``python -m bench``.
"""

from __future__ import annotations

import sys
from typing import TextIO

from bench.department_import import run


def main(argv: list[str] | None = None, out: TextIO = sys.stdout) -> int:
    """Run the department import bench (``--rows``, default 100,000)."""
    return run(argv, out)
