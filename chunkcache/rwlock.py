"""A reader-writer lock: many readers at once, or one writer alone.

Writer-preferring: once a writer waits, new readers wait behind it, so a steady stream of
searches cannot starve an ingest. Not reentrant: a thread holding it (either side) must not
take it again, or it may deadlock behind a waiting writer; take it once, at the outermost
call that needs it. Plain `threading`, no global state.
"""

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class ReadWriteLock:
    """>>> lock = ReadWriteLock()
    >>> with lock.read(): ...   # search, get, list: run together
    >>> with lock.write(): ...  # ingest, delete, flush: run alone
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()

    @property
    def readers(self) -> int:
        """Readers inside now (for tests and diagnostics)."""
        with self._cond:
            return self._readers
