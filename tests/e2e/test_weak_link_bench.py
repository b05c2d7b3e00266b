"""``python -m bench weak_link`` runs end to end on a small load and prints its table.

The full 1,000-record run takes about a minute of real time on the 64 kbit/s link; here 60
records go through the same path (real server process, real device, the village-link proxy
profile with drops) so the bench cannot rot unnoticed.
"""

from __future__ import annotations

import io

import pytest

from bench import weak_link


@pytest.mark.slow
def test_the_weak_link_bench_syncs_everything_and_prints_the_ratio() -> None:
    out = io.StringIO()
    assert weak_link.main(["--records", "60", "--seed", "3"], out=out) == 0
    text = out.getvalue()
    assert "village link (drops)" in text
    assert "same link, no drops" in text
    assert "ideal: drop-free bytes" in text and "round trip per exchange" in text
    assert "cuts that landed on the drop run:" in text
    # Where each run's time went (from the client's exchange timeline) and the server's CPU.
    spent = [line for line in text.splitlines() if line.startswith("where the time went, ")]
    assert len(spent) == 2 and all("server CPU" in line and "transfer" in line for line in spent)
    assert "every record arrived exactly once; outbox empty" in text
    assert "DATA PROBLEM" not in text
    rows = [line for line in text.splitlines() if line.startswith(("village link", "same link"))]
    ratios = [float(next(part for part in row.split() if part.endswith("x"))[:-1]) for row in rows]
    # Only the floor is asserted: the proxy paces every byte, so finishing faster than the
    # ideal time (drop-free bytes ÷ bandwidth + a round trip per exchange) would mean the bytes
    # or the round trips were not counted. How close we get to it is a speed
    # figure, which belongs to the benchmark's table, not to a test on a shared machine.
    # Never meaningfully faster than the byte-ideal floor: 1 % under it is the proxy's pacing
    # granularity (seen 0.99 on a fresh clone), not a wrong floor.
    assert len(ratios) == 2 and min(ratios) >= 0.95
