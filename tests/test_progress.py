"""Progress off a terminal: timestamped log lines at most every interval, no carriage returns."""

import io
import logging
import re
import time

from tqdm import tqdm

from cellblock.profiling.apchunks import block_average_precision
from cellblock.progress import LogBar, progress_bar
from tests.test_mapscore import RULES, screen

LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (?P<desc>[\w ]+): (?P<done>[\d,]+)/(?P<total>[\d,]+) "
    r"(?P<unit>\w+) \([\d.]+%\), [\d,.]+ \w+/s, (?P<tail>.*)$"
)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_a_terminal_a_long_stage_logs_timestamped_lines(caplog):
    caplog.set_level(logging.INFO, logger="cellblock.progress")
    stream = io.StringIO()  # not a terminal: a log file, a SLURM job's output
    with progress_bar(40, desc="pack", unit="site", interval=0.05, stream=stream) as bar:
        assert isinstance(bar, LogBar)
        for _ in range(40):
            time.sleep(0.01)
            bar.update(1)
    lines = [r.getMessage() for r in caplog.records]
    assert stream.getvalue() == ""  # nothing drawn, no "\r"
    # ~0.4 s at one line per 0.05 s or more: a handful, not one per update
    assert 3 <= len(lines) <= 12
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), lines
    done = [int(m["done"]) for m in parsed if m]
    assert done == sorted(done) and done[-1] == 40
    assert all(m["desc"] == "pack" and m["total"] == "40" for m in parsed if m)
    assert all(m["tail"].endswith("left") for m in parsed[:-1] if m)
    assert parsed[-1] and parsed[-1]["tail"].startswith("done in")


def test_a_short_stage_logs_only_its_end(caplog):
    caplog.set_level(logging.INFO, logger="cellblock.progress")
    with progress_bar(3, desc="verify", unit="site", stream=io.StringIO()) as bar:
        bar.update(3)  # well within the default 30 s
    assert len(caplog.records) == 1 and "done in" in caplog.records[0].getMessage()


def test_bytes_are_scaled_and_a_terminal_gets_tqdm(caplog):
    caplog.set_level(logging.INFO, logger="cellblock.progress")
    with progress_bar(2**21, desc="fetch", unit="B", unit_scale=True, stream=io.StringIO()) as b:
        b.set_postfix_str("1/2 files")
        b.update(2**20)
    assert "1.05M/2.10M B (50.0%)" in caplog.records[0].getMessage()
    assert "1/2 files" in caplog.records[0].getMessage()
    terminal = Terminal()
    with progress_bar(5, desc="synthesize", stream=terminal) as bar:
        assert isinstance(bar, tqdm)
        bar.update(5)
    assert "synthesize" in terminal.getvalue()


def test_the_map_stage_reports_progress(caplog):
    caplog.set_level(logging.INFO, logger="cellblock.progress")
    meta, x = screen(0, n_sirnas=20)
    block_average_precision(meta, x, RULES["consistency"], block_elements=len(x))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and f"average precision: {len(x)}/{len(x)} well" in lines[0]
