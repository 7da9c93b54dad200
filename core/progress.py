"""One progress bar for work spread over processes: rank 0 counts the items of every rank.

Ranks cannot exchange counts through collectives while they work (their shards differ in length, so a rank that
is done would wait in a collective for a rank that is not), so each rank writes its count into a small file of a
folder they share (the output folder: on a cluster, a shared filesystem, as for the outputs themselves), and rank
0's bar shows the sum each time it advances; when its own shard is done it keeps polling until every rank has
reported its last item, then closes. The bar shows the rate and the time left (tqdm).
"""

from __future__ import annotations

import os
import time
from pathlib import Path


class SharedProgress:
    def __init__(self, folder: str | Path, total: int, rank: int = 0, world: int = 1, desc: str = "images",
                 enabled: bool = True, poll_seconds: float = 0.5) -> None:
        from tqdm import tqdm

        self.folder, self.total, self.rank, self.world = Path(folder), int(total), int(rank), int(world)
        self.poll_seconds = float(poll_seconds)
        self.done = 0
        self.bar = tqdm(total=self.total, desc=desc, unit="image") if enabled and rank == 0 else None
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
