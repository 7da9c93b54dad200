"""Progress in a log file: whole lines at every 10 % (or 30 s) and a last one, never carriage returns."""

from __future__ import annotations

import io

from core.progress import LineTqdm, SharedProgress, bar


def test_a_bar_into_a_file_prints_lines_at_every_tenth_and_at_the_end():
    out = io.StringIO()
    for _ in bar(range(40), desc="restoring", file=out, mininterval=0):  # every update reaches display
        pass
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert 8 <= len(lines) <= 11 and all(line.startswith("restoring:") for line in lines)
    assert "40/40" in lines[-1] and "100%" in lines[-1]


def test_an_inner_bar_that_vanishes_prints_nothing_when_quick():
    out = io.StringIO()
    for _ in LineTqdm(range(50), desc="steps", leave=False, file=out, mininterval=0):
        pass
    assert out.getvalue() == ""


def test_a_terminal_gets_tqdm_itself():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    assert type(bar(range(2), file=Terminal())) is not LineTqdm


def test_shared_progress_counts_every_ranks_items(tmp_path):
    ranks = [SharedProgress(tmp_path, total=5, rank=r, world=2, enabled=False) for r in (0, 1)]
    for _ in range(3):
        ranks[0].advance()
    ranks[1].advance(2)
    assert ranks[0].counted() == 5
    ranks[1].close()
    ranks[0].close()  # returns: every rank has reported its last item
