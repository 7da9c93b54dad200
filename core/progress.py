"""One progress bar for work spread over processes: rank 0 counts the items of every rank.

Ranks cannot exchange counts through collectives while they work (their shards differ in length, so a rank that
is done would wait in a collective for a rank that is not), so each rank writes its count into a small file of a
folder they share (the output folder: on a cluster, a shared filesystem, as for the outputs themselves), and rank
0's bar shows the sum each time it advances; when its own shard is done it keeps polling until every rank has
reported its last item, then closes. The bar shows the rate and the time left (tqdm).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from tqdm import tqdm

LINE_SECONDS = 30.0  # a log line at least this often while a bar moves (when the output is a file or a pipe)
LINE_FRACTION = 0.1  # and at every 10 % of a bar that stays (leave=True)


class LineTqdm(tqdm):
    """tqdm for logs: when the output is not a terminal (demo.sh piped to a file, CI, SLURM), a full line
    ("desc: 35%|... 7/20 [00:05<00:09, 1.3image/s]") every LINE_SECONDS or every LINE_FRACTION of the total,
    and a last line at the end, instead of thousands of carriage-return redraws. Bars that vanish when done
    (leave=False: a sampler's steps, the tiles) print only on time, so short inner loops stay silent. Only the
    drawing changes: counting, rates and Gradio's tracking of tqdm (the web page) are tqdm's own."""

    def display(self, msg=None, pos=None):
        if msg is not None:  # tqdm clearing or rewriting the line: nothing to clear in a log
            return True
        now, done = time.monotonic(), self.total is not None and self.n >= self.total
        if not hasattr(self, "_line_state"):  # the first draw, from tqdm's __init__: nothing done yet
            self._line_state = (now, 0.0, False)
            return True
        last_time, last_fraction, finished = self._line_state
        fraction = self.n / self.total if self.total else 0.0
        due = now - last_time >= LINE_SECONDS or (self.leave and fraction - last_fraction >= LINE_FRACTION)
        if done and self.leave and not finished or (due and not done):
            self.fp.write(f"{self}\n")
            self.fp.flush()
            self._line_state = (now, fraction, done)
        return True


    def close(self):
        # tqdm's close ends a bar with a bare "\r" or "\n" for the terminal's cursor: nothing a log needs
        fp = getattr(self, "fp", None)
        if fp is not None and not isinstance(fp, _LogStream):
            self.fp = _LogStream(fp)
        super().close()


class _LogStream:
    """A stream that drops tqdm's cursor controls (writes that are only "\r" / "\n")."""

    def __init__(self, stream) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        if text.strip("\r\n"):
            self.stream.write(text.lstrip("\r"))

    def flush(self) -> None:
        self.stream.flush()


def is_terminal(stream=None) -> bool:
    stream = stream if stream is not None else sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)())


def bar(*args, **kwargs) -> tqdm:
    """A progress bar: tqdm on a terminal, LineTqdm when the output is a file or a pipe."""
    cls = tqdm if is_terminal(kwargs.get("file")) else LineTqdm
    return cls(*args, **kwargs)


class SharedProgress:
    def __init__(self, folder: str | Path, total: int, rank: int = 0, world: int = 1, desc: str = "images",
                 enabled: bool = True, poll_seconds: float = 0.5) -> None:
        self.folder, self.total, self.rank, self.world = Path(folder), int(total), int(rank), int(world)
        self.poll_seconds = float(poll_seconds)
        self.done = 0
        self.bar = bar(total=self.total, desc=desc, unit="image") if enabled and rank == 0 else None
        if world > 1:
            self.folder.mkdir(parents=True, exist_ok=True)

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self.world > 1:
            self._write(str(self.done))
        self._refresh()

    def close(self) -> None:
        """Rank 0: wait until every rank has counted its last item (the bar then reads total), close the bar."""
        if self.world > 1:
            self._write(f"{self.done} done")
            while self.rank == 0 and not self._all_done():
                self._refresh()
                time.sleep(self.poll_seconds)
        self._refresh()
        if self.bar is not None:
            self.bar.close()

    # -- files ----------------------------------------------------------------------------------------------
    def _write(self, text: str) -> None:
        path = self.folder / f"rank{self.rank}"
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)  # a reader sees the old count or the new one, never a partial file

    def _reports(self) -> list[str]:
        out = []
        for rank in range(self.world):
            try:
                out.append((self.folder / f"rank{rank}").read_text())
            except OSError:
                out.append("0")
        return out

    def _all_done(self) -> bool:
        return all(r.endswith("done") for r in self._reports())

    def counted(self) -> int:
        """Items done over all ranks, as far as rank 0 can see."""
        if self.world == 1:
            return self.done
        return sum(int(r.split()[0]) for r in self._reports() if r.split())

    def _refresh(self) -> None:
        if self.bar is not None:
            self.bar.n = min(self.counted(), self.total)
            self.bar.refresh()
