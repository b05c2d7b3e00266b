"""Run the benchmarks: ``python -m bench`` runs every bench, ``python -m bench NAME ...`` some.

A bench is a module ``bench/<name>.py`` defining ``main(argv: list[str] | None) -> int``; it is
found here without registration, so adding a bench means adding its module. Arguments after
the bench names (``python -m bench wire_size --households 50``) go to the bench when exactly one
is named.

The exit code is non-zero only when a bench could not run (bad arguments, an unknown bench, a
measurement that lost data). A measured target that is missed is not a failure of the run: the
bench prints it as ``MISSED`` on its own line and still exits 0, so ``make bench`` always
produces the whole table for the record.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
from collections.abc import Callable, Sequence

import bench


def discover() -> dict[str, Callable[[list[str] | None], int]]:
    """Bench name → its ``main``, for every module of the ``bench`` package that has one."""
    found: dict[str, Callable[[list[str] | None], int]] = {}
    for module_info in pkgutil.iter_modules(bench.__path__):
        if module_info.name.startswith("_"):
            continue
        module = importlib.import_module(f"bench.{module_info.name}")
        entry = getattr(module, "main", None)
        if callable(entry):
            found[module_info.name] = entry
    return found


def main(argv: Sequence[str] | None = None) -> int:
    """Run the named benches (all when none is named); return the first non-zero exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    benches = discover()
    names = [a for a in args if not a.startswith("-") and a in benches]
    unknown = [a for a in args if not a.startswith("-") and a not in benches]
    if unknown and not names:
        print(f"unknown bench {unknown[0]!r}; known: {', '.join(sorted(benches))}", file=sys.stderr)
        return 2
    rest = args[len(names) :] if names and args[: len(names)] == names else []
    if rest and len(names) != 1:
        print("bench arguments need exactly one bench name first", file=sys.stderr)
        return 2
    status = 0
    for name in names or sorted(benches):
        started = time.perf_counter()
        print(f"== {name} ==", flush=True)
        # Always a list: ``None`` would make argparse read ``sys.argv`` (the bench names).
        code = benches[name](list(rest))
        print(f"== {name}: {time.perf_counter() - started:.1f} s ==\n", flush=True)
        status = status or code
    return status


if __name__ == "__main__":
    sys.exit(main())
