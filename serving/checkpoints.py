"""SQLite's write-ahead log, copied into the database file beside the decisions.

A commit in WAL mode appends to the log; some connection must copy the log into the
database file (a checkpoint) and fsync the file. Left to SQLite, the commit that fills
the log past ``wal_autocheckpoint`` pages does it, and with ``synchronous=FULL`` every
decision of that commit and of the groups behind it waits for the copy and the fsync.

``Checkpoints`` does the copying on a thread of its own, with a connection of its own:

- every ``every_seconds`` a *passive* checkpoint copies what the readers allow and never
  holds a writer back;
- a passive checkpoint never starts the log over while reads go on (it grew 1.7 GB in
  ten minutes once), so when the log holds more than ``restart_pages`` a *restart*
  checkpoint waits for the readers to leave it, and the next commit writes the log from
  its start again. While it waits new commits wait too, at most ``wait_ms``; when the
  readers take longer it gives up and tries again on the next round.

The commits keep ``wal_autocheckpoint`` as a backstop (``BACKSTOP_PAGES``), reached only if
this thread falls behind.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

__all__ = ["BACKSTOP_PAGES", "RESTART_PAGES", "Checkpoints"]

log = logging.getLogger("serving")

RESTART_PAGES = 1_000
"""The log's pages past which it is started over (4 MB of 4 KB pages)."""

BACKSTOP_PAGES = 4 * RESTART_PAGES
"""The serving connections' ``wal_autocheckpoint``: a commit checkpoints only past this."""


class Checkpoints:
    """The thread that checkpoints the SQLite database at ``path`` (see the module)."""

    def __init__(
        self,
        path: Path,
        *,
        every_seconds: float = 0.1,
        restart_pages: int = RESTART_PAGES,
        wait_ms: int = 50,
    ) -> None:
        self.path = path
        self.every_seconds = every_seconds
        self.restart_pages = restart_pages
        self.wait_ms = wait_ms
        self.restarts = 0  # restart checkpoints that started the log over
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wal-checkpoints", daemon=True)

    def start(self) -> Checkpoints:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        while not self._stop.wait(self.every_seconds):
            try:
                if conn is None:
                    conn = sqlite3.connect(self.path)
                    conn.execute(f"PRAGMA busy_timeout={int(self.wait_ms)}")
                self.round(conn)
            except sqlite3.Error as exc:
                # The decisions report the store's trouble; this tries again next round.
                log.debug("checkpoint skipped: %s", exc)
                if conn is not None:
                    conn.close()
                    conn = None
        if conn is not None:
            conn.close()

    def round(self, conn: sqlite3.Connection) -> None:
        """One passive checkpoint, and a restart when the log has grown past its bound."""
        _busy, pages, _copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if pages > self.restart_pages:
            busy, _pages, _copied = conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
            self.restarts += not busy
