"""The id register of batch scoring against sqlite3, DuckDB and polars: same answers, time and memory.

A scoring run registers every chunk's ids and asks which were seen in an earlier chunk
(``clinical_mtl.data.IdRegister.seen_before``), in memory bounded whatever the input's length.
This benchmark streams ``--rows`` ids (default 2,000,000; random 62-bit integers, 1% of rows
repeating an id of an earlier chunk) in chunks of 65,536 (the scoring default) through:

- ``IdRegister``: ours, an external-sort register of 64-bit keys (sorted runs in temporary files);
- ``sqlite3`` (standard library): a ``WITHOUT ROWID`` table keyed by the id in a temporary file,
  16 MiB page cache; each chunk goes to a temporary table, joined, then inserted;
- ``duckdb``: a table in a temporary database file, ``memory_limit`` 64 MiB, one thread; each
  chunk is semi-joined against the table, then its new ids appended;
- ``polars``: the seen ids as one in-memory ``Series`` and ``is_in``: a speed reference only, its
  memory grows with the input.

Each register gets the same 64-bit keys (the hashing of non-integer ids is shared and not timed
apart). Every answer is checked against an independent oracle (the first chunk of each id, from
pandas). Each register runs in its own fresh process, ``--repeats`` times, interleaved; the table
gives the median seconds, ids per second, the ratio to ours, and the growth of peak RSS during the
run (``ru_maxrss``). Run ``python benchmarks/id_register_speed.py``; results go to
``reports/id_register.md``. DuckDB and polars are not dependencies of the package; the ``bench``
extra installs them.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPORTS = Path(__file__).resolve().parents[1] / "reports"
CHUNK = 65_536
REGISTERS = ("IdRegister", "sqlite3", "duckdb", "polars")


def make_ids(rows: int, seed: int = 0) -> np.ndarray:
    """``rows`` int64 ids, 1% of them repeating an id of an earlier chunk (never of their own chunk)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 2**62, size=rows, dtype=np.int64)
    repeats = rng.choice(np.arange(CHUNK, rows), size=rows // 100, replace=False)
    chunk_start = repeats // CHUNK * CHUNK
    ids[repeats] = ids[rng.integers(0, chunk_start)]  # a position in an earlier chunk
    return ids


def expected_marks(ids: np.ndarray) -> np.ndarray:
    """Oracle: an id is marked when its first occurrence is in an earlier chunk."""
    chunk = np.arange(len(ids)) // CHUNK
    first = pd.Series(chunk).groupby(ids).transform("min").to_numpy()
    return chunk > first


class SqliteRegister:
    def __init__(self, folder: str):
        import sqlite3

        self.db = sqlite3.connect(Path(folder) / "ids.sqlite")
        for pragma in ("journal_mode=OFF", "synchronous=OFF", "cache_size=-16384", "temp_store=MEMORY"):
            self.db.execute(f"PRAGMA {pragma}")
        self.db.execute("CREATE TABLE ids (key INTEGER PRIMARY KEY) WITHOUT ROWID")
        self.db.execute("CREATE TEMP TABLE chunk (key INTEGER PRIMARY KEY) WITHOUT ROWID")

    def seen_before(self, keys: np.ndarray) -> np.ndarray:
        unique, inverse = np.unique(keys.view(np.int64), return_inverse=True)
        self.db.executemany("INSERT INTO chunk VALUES (?)", ((k,) for k in unique.tolist()))
        found = np.fromiter((k for (k,) in self.db.execute("SELECT key FROM chunk JOIN ids USING (key)")),
                            dtype=np.int64)
        self.db.execute("INSERT OR IGNORE INTO ids SELECT key FROM chunk")
        self.db.execute("DELETE FROM chunk")
        self.db.commit()
        return np.isin(unique, found)[inverse]


class DuckdbRegister:
    def __init__(self, folder: str):
        import duckdb

        self.db = duckdb.connect(str(Path(folder) / "ids.duckdb"))
        self.db.execute(f"SET memory_limit='64MB'; SET threads=1; SET temp_directory='{folder}'")
        self.db.execute("CREATE TABLE ids (key BIGINT)")

    def seen_before(self, keys: np.ndarray) -> np.ndarray:
        unique, inverse = np.unique(keys.view(np.int64), return_inverse=True)
        chunk = pd.DataFrame({"key": unique})
        self.db.register("chunk", chunk)
        found = self.db.execute("SELECT key FROM chunk SEMI JOIN ids USING (key)").fetchnumpy()["key"]
        seen = np.isin(unique, found)
        self.db.register("fresh", pd.DataFrame({"key": unique[~seen]}))
        self.db.execute("INSERT INTO ids SELECT key FROM fresh")
        self.db.unregister("chunk")
        self.db.unregister("fresh")
        return seen[inverse]


class PolarsRegister:
    def __init__(self, folder: str):
        import polars as pl

        self.pl = pl
        self.seen = pl.Series("key", [], dtype=pl.UInt64)

    def seen_before(self, keys: np.ndarray) -> np.ndarray:
        unique, inverse = np.unique(keys, return_inverse=True)
        chunk = self.pl.Series("key", unique)
        found = chunk.is_in(self.seen).to_numpy()
        self.seen = self.pl.concat([self.seen, chunk.filter(~chunk.is_in(self.seen))], rechunk=False)
        return found[inverse]


def run_one(name: str, rows: int) -> dict:
    """Stream the ids through one register in this process; its time, answers' agreement and RSS growth."""
    import resource

    from clinical_mtl.data.id_register import IdRegister, _id_keys

    ids = make_ids(rows)
    chunks = [pd.Series(ids[start:start + CHUNK]) for start in range(0, rows, CHUNK)]
    keys = [_id_keys(chunk) for chunk in chunks]
    marks, spilled = [], 0
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        if name == "IdRegister":
            with IdRegister() as register:
                marks = [register.seen_before(chunk) for chunk in chunks]
                spilled = 8 * sum(run.length for run in register._runs)  # anonymous files, not in the folder
        else:
            register = {"sqlite3": SqliteRegister, "duckdb": DuckdbRegister, "polars": PolarsRegister}[name](folder)
            marks = [register.seen_before(chunk_keys) for chunk_keys in keys]
        seconds = time.perf_counter() - start
        disk = spilled if name == "IdRegister" else sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    got = np.concatenate(marks)
    expected = expected_marks(ids)  # after the peak is read: the oracle's memory is not the register's
    return {"register": name, "seconds": seconds, "correct": bool(np.array_equal(got, expected)),
            "marked": int(got.sum()), "expected": int(expected.sum()),
            "rss_growth_mb": (peak - before) / 1024, "disk_mb": disk / 2**20}


def library_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {"sqlite3": __import__("sqlite3").sqlite_version}
    for name in ("duckdb", "polars", "numpy"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--one", choices=REGISTERS, help=argparse.SUPPRESS)  # a child process's register
    parser.add_argument("--output", type=Path, default=REPORTS / "id_register.md")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.rows)))
        return
    runs: dict[str, list[dict]] = {name: [] for name in REGISTERS}
    for repeat in range(args.repeats):
        for name in REGISTERS:
            child = subprocess.run([sys.executable, __file__, "--one", name, "--rows", str(args.rows)],
                                   capture_output=True, text=True, check=True)
            runs[name].append(json.loads(child.stdout))
            print(repeat, runs[name][-1], flush=True)
    ours = statistics.median(run["seconds"] for run in runs["IdRegister"])
    lines = [
        "# Id register: ours against sqlite3, DuckDB and polars",
        "",
        f"{args.rows:,} ids (random 62-bit integers, 1% repeating an id of an earlier chunk) in chunks of "
        f"{CHUNK:,}, each register in a fresh process, {args.repeats} runs each, interleaved, on one machine "
        f"({platform.machine()}, shared with other work: compare the ratios, not the seconds). Written by "
        "`python benchmarks/id_register_speed.py`. Versions: "
        + ", ".join(f"{k} {v}" for k, v in library_versions().items()) + ".",
        "",
        "| register | median s | ids/s | time / ours | all answers right | RSS growth MiB (max) | disk MiB |",
        "|---|---:|---:|---:|:---:|---:|---:|",
    ]
    for name, done in runs.items():
        seconds = statistics.median(run["seconds"] for run in done)
        lines.append(f"| {name} | {seconds:.2f} | {args.rows / seconds:,.0f} | {seconds / ours:.1f} | "
                     f"{'yes' if all(run['correct'] for run in done) else 'NO'} | "
                     f"{max(run['rss_growth_mb'] for run in done):.0f} | {done[-1]['disk_mb']:.0f} |")
    lines += ["", "Runs (seconds): " + "; ".join(
        f"{name} " + ", ".join(f"{run['seconds']:.2f}" for run in done) for name, done in runs.items()), ""]
    args.output.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
