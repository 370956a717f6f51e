"""Disk tier: one LMDB environment per directory, with access records for eviction.

Sub-databases of the environment (each write touches them in one transaction):
    b"kv"      key -> value
    b"access"  key -> AccessRecord (last access ns, access count, value size)
    b"info"    b"bytes" -> uint64 total value bytes

Choices, and why:
- Durability: LMDB's default flags (sync, metasync, no writemap). A committed transaction
  survives a killed process (and a power loss); an interrupted one leaves no trace.
- Map growth: MapFullError aborts the transaction; the map is doubled (or grown by twice the
  batch, if more) and the transaction retried. A map grown by another process shows up here as
  MapResizedError; the new size is adopted (set_mapsize(0)) and the transaction retried.
  py-lmdb's set_mapsize invalidates every open transaction of the process, so transactions
  hold a shared lock and a resize takes it exclusively (`storage/gate.py`).
- Reads stay read-only transactions: the access time/count a get produces is buffered in
  memory and written by the next write transaction (put, delete), after every
  `access_flush_every` buffered gets, or on close. A killed process loses only its buffered
  access records, which skews eviction order a little and never loses data.
- Eviction: when a write takes value bytes over max_bytes, the same transaction scans the
  access records and deletes victims (`storage/eviction.py`) until bytes <= low_water *
  max_bytes. The headroom makes the O(entries) scan happen about once per (1 - low_water) of
  the budget written rather than on every put. Entries being written are evicted last.
- One LmdbTier per directory per process: LMDB forbids opening an environment twice in one
  process (py-lmdb raises). Any number of processes may open the same directory at once;
  LMDB serializes their writers and lets readers run alongside. Do not share across fork().
"""

import mmap
import os
import struct
import threading
import time
from typing import Callable, Iterable, Iterator, TypeVar

import lmdb

from chunkcache.errors import ConfigError, StorageError, check_int
from chunkcache.storage.diskspace import no_space
from chunkcache.storage.eviction import POLICIES, AccessRecord, choose_victims
from chunkcache.storage.gate import SharedExclusiveLock
from chunkcache.storage.tier import TierStats, check_key, check_value

DATA_DB = b"kv"
ACCESS_DB = b"access"
INFO_DB = b"info"
_BYTES_KEY = b"bytes"
_U64 = struct.Struct("<Q")
_MIN_MAP_SIZE = 32 * 1024
_MAX_MAP_SIZE = 2**44  # 16 TiB of address space; past this a "full" map is a bug, not growth
_KEY_PAGE = 1024  # keys() reads this many keys per read transaction
T = TypeVar("T")


class LmdbTier:
    """Bytes tier on disk under an optional value-byte budget, evicting by "lru" or "lfu"."""

    def __init__(
        self,
        path: str | os.PathLike,
        map_size: int = 2**30,
        max_bytes: int | None = None,
        eviction: str = "lru",
        *,
        name: str = "lmdb",
        max_readers: int = 256,
        access_flush_every: int = 256,
        low_water: float = 0.9,
    ) -> None:
        check_int("LmdbTier map_size", map_size, _MIN_MAP_SIZE)
        if max_bytes is not None:
            check_int("LmdbTier max_bytes", max_bytes, 1)
        check_int("LmdbTier max_readers", max_readers, 1)
        check_int("LmdbTier access_flush_every", access_flush_every, 1)
        if eviction not in POLICIES:
            raise ConfigError(f"eviction must be one of {POLICIES}, got {eviction!r}")
        if not 0.0 < low_water <= 1.0:
            raise ConfigError(f"low_water must be in (0, 1], got {low_water!r}")
        self.name = name
        self.path = os.fspath(path)
        self.max_bytes = max_bytes
        self.eviction = eviction
        self._flush_every = access_flush_every
        self._low_water = low_water
        self._write_lock = threading.RLock()  # one write transaction or resize at a time
        self._gate = SharedExclusiveLock()
        self._lock = threading.Lock()  # counters and the access buffer
        self._pending: dict[bytes, tuple[int, int]] = {}  # key -> (last access ns, gets)
        self._reads_pending = 0
        self._hits = self._misses = self._puts = self._evictions = self._rejected = 0
        self._closed = False
        try:
            os.makedirs(self.path, exist_ok=True)
            self._env = lmdb.open(
                self.path, map_size=map_size, subdir=True, max_dbs=3, max_readers=max_readers, lock=True
            )
        except (OSError, lmdb.Error) as e:
            raise StorageError(f"cannot open LMDB environment at {self.path!r}: {e}") from e
        self._data, self._access, self._info = self._write(self._open_dbs)

    @property
    def map_size(self) -> int:
        """Current size of the memory map in bytes (grows on demand)."""
        return self._read(lambda txn: self._env.info()["map_size"])

    def get(self, key: bytes) -> bytes | None:
        check_key(key)
        value = self._read(lambda txn: txn.get(key, db=self._data))
        with self._lock:
            if value is None:
                self._misses += 1
                return None
            self._hits += 1
            _, gets = self._pending.get(key, (0, 0))
            self._pending[key] = (time.time_ns(), gets + 1)
            self._reads_pending += 1
            flush = self._reads_pending >= self._flush_every
        if flush:
            self._flush_access()
        return value

    def put(self, key: bytes, value: bytes) -> None:
        self.put_many([(key, value)])

    def put_many(self, items: Iterable[tuple[bytes, bytes]]) -> None:
        """Write all items in one transaction: all of them are committed, or none."""
        batch = [(check_key(k), check_value(v)) for k, v in items]
        if not batch:
            return
        need = sum(len(k) + len(v) for k, v in batch)
        written, evicted, rejected = self._write(lambda txn: self._put_batch(txn, batch), need)
        with self._lock:
            self._puts += written
            self._evictions += evicted
            self._rejected += rejected

    def contains(self, key: bytes) -> bool:
        check_key(key)
        return self._read(lambda txn: txn.cursor(db=self._data).set_key(key))

    def delete(self, key: bytes) -> bool:
        check_key(key)
        return self._write(lambda txn: self._delete_one(txn, key))

    def keys(self) -> Iterator[bytes]:
        """All keys in byte order, read a page at a time (no transaction is held between pages)."""
        self._read(lambda txn: None)  # raise now, not on first next(), if closed
        return self._iter_keys()

    def stats(self) -> TierStats:
        entries, total = self._read(lambda txn: (txn.stat(self._data)["entries"], _total(txn, self._info)))
        with self._lock:
            return TierStats(
                name=self.name, hits=self._hits, misses=self._misses, puts=self._puts,
                entries=entries, bytes=total, max_bytes=self.max_bytes,
                evictions=self._evictions, rejected=self._rejected,
            )

    def close(self) -> None:
        """Write buffered access records and close the environment. Idempotent."""
        with self._write_lock:
            if self._closed:
                return
            try:
                self._flush_access()
            finally:
                with self._gate.exclusive():
                    self._closed = True
                    self._env.close()

    # -- transactions -------------------------------------------------------------------

    def _read(self, fn: Callable[[lmdb.Transaction], T]) -> T:
        while True:
            try:
                with self._gate.shared():
                    self._check_open()
                    with self._env.begin(write=False) as txn:
                        return fn(txn)
            except lmdb.MapResizedError:
                with self._write_lock:
                    self._set_map_size(0)  # adopt the size another process grew the map to
            except lmdb.Error as e:
                raise StorageError(f"LMDB read failed at {self.path!r}: {e}") from e

    def _write(self, fn: Callable[[lmdb.Transaction], T], need_bytes: int = 0) -> T:
        """Run fn in a write transaction (after applying buffered access records), growing the
        map and retrying while it is full. The access buffer is restored if nothing commits."""
        with self._write_lock:
            self._check_open()
            with self._lock:
                pending, self._pending, self._reads_pending = self._pending, {}, 0
            try:
                while True:
                    try:
                        with self._gate.shared():
                            with self._env.begin(write=True) as txn:
                                self._apply_access(txn, pending)
                                return fn(txn)
                    except lmdb.MapFullError:
                        self._grow(need_bytes)
                    except lmdb.MapResizedError:
                        self._set_map_size(0)
                    except lmdb.Error as e:
                        full = no_space(self.path, need_bytes, e)
                        if full is not None:  # LMDB says EIO for a short write; name the real cause
                            raise StorageError(f"LMDB write failed at {self.path!r}: no space left on device: {full.strerror}") from full
                        raise StorageError(f"LMDB write failed at {self.path!r}: {e}") from e
            except BaseException:
                with self._lock:
                    for key, (ts, gets) in pending.items():
                        old_ts, old_gets = self._pending.get(key, (0, 0))
                        self._pending[key] = (max(ts, old_ts), gets + old_gets)
                raise

    def _grow(self, need_bytes: int) -> None:
        current = self._env.info()["map_size"]
        new = max(2 * current, current + 2 * need_bytes)
        new = -(-new // mmap.PAGESIZE) * mmap.PAGESIZE
        if new > _MAX_MAP_SIZE:
            raise StorageError(f"LMDB map at {self.path!r} would grow to {new} bytes, past the {_MAX_MAP_SIZE} limit")
        self._set_map_size(new)

    def _set_map_size(self, size: int) -> None:
        """Caller holds _write_lock; waits until no transaction of this process is open."""
        with self._gate.exclusive():
            self._check_open()
            self._env.set_mapsize(size)

    def _flush_access(self) -> None:
        with self._lock:
            if not self._pending:
                return  # another thread flushed it already
        self._write(lambda txn: None)  # every write transaction applies the access buffer

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"tier {self.name!r} at {self.path!r} is closed")

    # -- work done inside a write transaction ---------------------------------------------

    def _open_dbs(self, txn: lmdb.Transaction) -> tuple:
        return tuple(self._env.open_db(name, txn=txn, create=True) for name in (DATA_DB, ACCESS_DB, INFO_DB))

    def _apply_access(self, txn: lmdb.Transaction, pending: dict[bytes, tuple[int, int]]) -> None:
        for key, (ts, gets) in pending.items():
            raw = txn.get(key, db=self._access)
            if raw is None:
                continue  # deleted or evicted since the get
            rec = AccessRecord.unpack(raw)
            txn.put(key, AccessRecord(max(rec.last_access_ns, ts), rec.count + gets, rec.size).pack(), db=self._access)

    def _put_batch(self, txn: lmdb.Transaction, batch: list[tuple[bytes, bytes]]) -> tuple[int, int, int]:
        """-> (written, evicted, rejected)."""
        total = _total(txn, self._info)
        now = time.time_ns()
        written: dict[bytes, None] = {}
        rejected = 0
        for i, (key, value) in enumerate(batch):
            raw = txn.get(key, db=self._access)
            old = AccessRecord.unpack(raw) if raw is not None else None
            if self.max_bytes is not None and len(value) > self.max_bytes:
                rejected += 1
                total -= self._delete_keys(txn, [key], update_total=False)  # never leave a stale value
                continue
            txn.put(key, value, db=self._data)
            # now + i keeps a batch's insertion order visible to LRU.
            txn.put(key, AccessRecord(now + i, old.count if old else 1, len(value)).pack(), db=self._access)
            total += len(value) - (old.size if old else 0)
            written[key] = None
        evicted = 0
        if self.max_bytes is not None and total > self.max_bytes:
            target = int(self.max_bytes * self._low_water)
            victims = choose_victims(self._records(txn), total - target, self.eviction, protected=list(written))
            total -= self._delete_keys(txn, victims, update_total=False)
            evicted = len(victims)
        txn.put(_BYTES_KEY, _U64.pack(total), db=self._info)
        return len(written), evicted, rejected

    def _delete_keys(self, txn: lmdb.Transaction, keys: list[bytes], update_total: bool = True) -> int:
        """Delete keys from kv and access; -> value bytes freed (0 if none existed)."""
        freed = 0
        for key in keys:
            raw = txn.get(key, db=self._access)
            txn.delete(key, db=self._data)
            if raw is not None:
                txn.delete(key, db=self._access)
                freed += AccessRecord.unpack(raw).size
        if update_total and freed:
            txn.put(_BYTES_KEY, _U64.pack(max(0, _total(txn, self._info) - freed)), db=self._info)
        return freed

    def _delete_one(self, txn: lmdb.Transaction, key: bytes) -> bool:
        existed = txn.cursor(db=self._data).set_key(key)
        self._delete_keys(txn, [key])
        return existed

    def _records(self, txn: lmdb.Transaction) -> Iterator[tuple[bytes, AccessRecord]]:
        for key, raw in txn.cursor(db=self._access):
            yield key, AccessRecord.unpack(raw)

    def _iter_keys(self) -> Iterator[bytes]:
        after = None
        while True:
            page = self._read(lambda txn: _key_page(txn, self._data, after))
            yield from page
            if len(page) < _KEY_PAGE:
                return
            after = page[-1]


def _total(txn: lmdb.Transaction, info_db) -> int:
    raw = txn.get(_BYTES_KEY, db=info_db)
    return _U64.unpack(raw)[0] if raw is not None else 0


def _key_page(txn: lmdb.Transaction, db, after: bytes | None) -> list[bytes]:
    cursor = txn.cursor(db=db)
    ok = cursor.first() if after is None else cursor.set_range(after)
    if ok and after is not None and cursor.key() == after:
        ok = cursor.next()
    keys = []
    while ok and len(keys) < _KEY_PAGE:
        keys.append(cursor.key())
        ok = cursor.next()
    return keys
