"""The ids a scoring run has seen, in bounded memory: an external-sort register of 64-bit keys.

Memory holds a small sorted buffer; full buffers spill to sorted runs in temporary files, merged
in tiers (like a log-structured merge tree) so that a lookup searches a few runs of each size."""

from __future__ import annotations

import tempfile

import numpy as np
import pandas as pd

_MERGE_FAN_IN = 4  # runs of one size merged into one: a lookup searches at most 3 runs of each size


# Ours, not sqlite3, DuckDB or polars (benchmarks/id_register_speed.py, reports/id_register.md: 2,000,000
# ids in 65,536-id chunks, each in its own process, same answers from all): sqlite3 (a keyed table on disk)
# takes 9 to 16 times as long, DuckDB (64 MiB limit, one thread) 1.5 to 3.9 times as long with 70 MiB of
# peak memory against our 10 MiB, and polars has no bounded on-disk set (153 MiB in memory, 7 to 10 times
# as long). Ours is the fastest and the leanest, and needs no dependency.
class IdRegister:
    """Ids seen so far, to reject a later row that repeats one, in memory bounded whatever the input's length.

    Integer ids are kept exactly; other ids as 64-bit hashes (a false
    duplicate needs a hash collision: below 1e-6 for 5 million ids). At most
    ``memory_budget`` ids stay in memory, sorted; beyond that they are written
    as a sorted run to an anonymous temporary file, and runs are merged on
    disk a few at a time, so that a lookup searches a few runs only. A run is
    read back a block at a time into a reused buffer, and only the blocks
    whose range holds an id looked up. Memory: the budget, a few blocks, and
    the first id of each block on disk (8 bytes per ``block_size`` ids).

    Use it as a context manager (or call :meth:`close`): the temporary files
    are deleted on closing.

    Parameters
    ----------
    memory_budget : int, default=2**18
        Most ids held in memory between calls (8 bytes each).
    block_size : int, default=2**16
        Ids read from a temporary file at a time.

    Attributes
    ----------
    ids_in_memory : int
        Ids held in memory now (the others are in temporary files).
    """

    def __init__(self, memory_budget: int = 2**18, block_size: int = 2**16):
        self.memory_budget = memory_budget
        self.block_size = block_size
        # Allocated once, not regrown chunk after chunk: long-lived arrays of changing sizes would
        # fragment the heap that every chunk's frames reuse.
        self._held = np.empty(memory_budget, dtype=np.uint64)
        self._block = np.empty(block_size, dtype=np.uint64)
        self.ids_in_memory = 0
        self._runs: list[_SortedRun] = []

    def seen_before(self, ids: pd.Series) -> np.ndarray:
        """Mark which of ``ids`` were registered by an earlier call, then register them all.

        Parameters
        ----------
        ids : Series
            One chunk's ids; missing ones are never duplicates, and a repeat
            within ``ids`` is not marked (the schema rejects those).

        Returns
        -------
        array of bool
            Whether each id was registered by an earlier call.
        """
        present = ids.notna().to_numpy()
        keys, key_of_row = np.unique(_id_keys(ids[present]), return_inverse=True)
        found = np.zeros(len(keys), dtype=bool)
        if self.ids_in_memory:
            held = self._held[:self.ids_in_memory]
            found |= held[np.minimum(np.searchsorted(held, keys), len(held) - 1)] == keys
        for run in self._runs:
            found |= run.contains(keys, self._block)
        earlier = np.zeros(len(ids), dtype=bool)
        earlier[present] = found[key_of_row]
        self._add(keys[~found])
        return earlier

    def close(self) -> None:
        """Delete the temporary files."""
        for run in self._runs:
            run.file.close()
        self._runs = []

    def __enter__(self) -> IdRegister:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _add(self, keys: np.ndarray) -> None:
        if self.ids_in_memory + len(keys) > self.memory_budget:
            self._spill(self._held[:self.ids_in_memory])
            self.ids_in_memory = 0
        if len(keys) > self.memory_budget:
            self._spill(keys)
            return
        held = self._held[:self.ids_in_memory + len(keys)]
        held[self.ids_in_memory:] = keys
        held.sort(kind="stable")  # two sorted runs: timsort merges them
        self.ids_in_memory = len(held)

    def _spill(self, keys: np.ndarray) -> None:
        if not len(keys):
            return
        run = _SortedRun(self.block_size, tier=0)
        self._runs.append(run)  # closed with the others even if writing it fails
        run.append(keys)
        run.finish()
        tier = 0
        while len(same_tier := [run for run in self._runs if run.tier == tier]) >= _MERGE_FAN_IN:
            merged = _merged(same_tier, self.block_size, tier + 1)
            for run in same_tier:
                run.file.close()
            self._runs = [run for run in self._runs if run.tier != tier] + [merged]
            tier += 1


class _SortedRun:
    """Distinct ids in ascending order in an anonymous temporary file, read back a block at a time."""

    def __init__(self, block_size: int, tier: int):
        self.file = tempfile.TemporaryFile()
        self.block_size = block_size
        self.tier = tier
        self.length = 0
        self.last = np.uint64(0)
        self.block_firsts: np.ndarray | list[np.ndarray] = []

    def append(self, keys: np.ndarray) -> None:
        """Write sorted ``keys``, all above those written before."""
        next_block_start = -self.length % self.block_size
        self.block_firsts.append(keys[next_block_start::self.block_size].copy())
        self.file.write(keys.view(np.uint8))
        self.length += len(keys)
        self.last = keys[-1]

    def finish(self) -> None:
        """Make the run ready to read, once every id is appended."""
        self.file.flush()
        self.block_firsts = np.concatenate(self.block_firsts)

    def blocks(self, buffer: np.ndarray):
        """Yield the run's blocks in order, each read into ``buffer`` (overwritten by the next)."""
        for index in range(len(self.block_firsts)):
            yield self.read_block(index, buffer)

    def read_block(self, index: int, buffer: np.ndarray) -> np.ndarray:
        start = index * self.block_size
        block = buffer[:min(self.block_size, self.length - start)]
        self.file.seek(start * block.itemsize)
        if self.file.readinto(block.view(np.uint8)) != block.nbytes:  # pragma: no cover - a truncated temp file
            raise OSError(f"Could not read back block {index} of a temporary file of ids.")
        return block

    def contains(self, keys: np.ndarray, buffer: np.ndarray) -> np.ndarray:
        """Whether each of the sorted, distinct ``keys`` is in the run; reads only the blocks that could hold one."""
        found = np.zeros(len(keys), dtype=bool)
        start = np.searchsorted(keys, self.block_firsts[0], side="left")
        stop = np.searchsorted(keys, self.last, side="right")
        candidates = keys[start:stop]
        if not len(candidates):
            return found
        block_of_candidate = np.searchsorted(self.block_firsts, candidates, side="right") - 1
        bounds = [0, *(np.flatnonzero(np.diff(block_of_candidate)) + 1), len(candidates)]
        for begin, end in zip(bounds[:-1], bounds[1:]):
            block = self.read_block(block_of_candidate[begin], buffer)
            wanted = candidates[begin:end]
            positions = np.minimum(np.searchsorted(block, wanted), len(block) - 1)
            found[start + begin:start + end] = block[positions] == wanted
        return found


def _merged(runs: list[_SortedRun], block_size: int, tier: int) -> _SortedRun:
    """One run of the ids of ``runs``, merged a block of each at a time."""
    merged = _SortedRun(block_size, tier)
    try:
        readers = [run.blocks(np.empty(block_size, dtype=np.uint64)) for run in runs]
        pending = [(reader, next(reader)) for reader in readers]
        while pending:
            # Every id up to the smallest of the blocks' last ids is in the blocks held: it can be written.
            bound = min(block[-1] for _, block in pending)
            ends = [np.searchsorted(block, bound, side="right") for _, block in pending]
            merged.append(np.sort(np.concatenate([block[:end] for (_, block), end in zip(pending, ends)]),
                                  kind="stable"))  # timsort: a few sorted pieces
            remaining = [(reader, block[end:] if end < len(block) else next(reader, None))
                         for (reader, block), end in zip(pending, ends)]
            pending = [(reader, block) for reader, block in remaining if block is not None]
        merged.finish()
    except BaseException:
        merged.file.close()
        raise
    return merged


def _id_keys(ids: pd.Series) -> np.ndarray:
    if pd.api.types.is_integer_dtype(ids.dtype):
        return ids.to_numpy(dtype=np.int64).view(np.uint64)
    if pd.api.types.is_float_dtype(ids.dtype) and np.all(np.mod(ids.to_numpy(), 1) == 0):
        return ids.to_numpy().astype(np.int64).view(np.uint64)
    return pd.util.hash_array(ids.astype(str).to_numpy(dtype=object))
