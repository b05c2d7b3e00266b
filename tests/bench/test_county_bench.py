"""Smoke test of the county bench: a tiny county, untimed, the figures are sane."""

from __future__ import annotations

import io
import re

from bench.county import main


def test_county_prints_load_api_percentiles_size_export_and_the_first_download() -> None:
    out = io.StringIO()
    assert (
        main(["--villages", "2", "--households", "3", "--calls", "3", "--copies", "1"], out=out)
        == 0
    )
    text = out.getvalue()
    assert "6 households (36 records) in 2 villages, loaded through python -m server" in text
    # Every record went through the ingest rules and was applied (none refused).
    assert "loaded 6 households, 36 records (applied 36)" in text
    assert re.search(r"load: [\d.,]+ s \([\d,]+ records/s", text), text
    # The copy into new townships is real rows: the dashboard counts both.
    assert "the figures below are of 12 households (72 records) in 4 villages" in text
    assert "the dashboard counts 12 households" in text
    assert re.search(r"database on disk: [\d.]+ MB \([\d,]+ B per household; WAL", text)
    for path in (
        "/api/v1/indicators?level=county",
        "/api/v1/indicators?level=village",
        "web /",
        "/api/v1/records?indicator=housing",
    ):
        row = re.search(re.escape(path) + r"\S*\s+3\s+([\d.]+)s\s+([\d.]+)s\s+1.0s\s+[\d.]+×", text)
        assert row and 0 < float(row.group(1)) <= float(row.group(2)), text
    export = re.search(r"whole-county export, 6 instruments as CSV: [\d.]+ s, ([\d.]+) MB", text)
    assert export, text
    download = re.search(
        r"first download \(530102001202, 3 households\): ([\d,]+) B down, ([\d,]+) B up, "
        r"(\d+) records, \d+ exchanges; ([\d.]+) s on loopback \(the server's work\); at 1 "
        r"Mbit/s ([\d.]+) s, byte-ideal floor ([\d.]+) s \(bytes both ways / bandwidth\): "
        r"([\d.]+)× the floor",
        text,
    )
    assert download, text
    # The fresh tablet of the last village receives its 3 households × 6 instruments.
    assert download.group(3) == "18"
    down, up = (int(download.group(n).replace(",", "")) for n in (1, 2))
    assert down > 1000 and up > 0
    # The floor is the bytes over the link's rate; a paced link cannot beat it.
    assert abs(float(download.group(6)) - (down + up) / 125_000) <= 0.006
    assert float(download.group(5)) >= float(download.group(6)) * 0.95
    assert re.search(r"target: <= 1,000,000 B for 500 households: [\d,]+ B scaled", text)
