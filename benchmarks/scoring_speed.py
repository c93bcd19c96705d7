"""Batch scoring speed and memory: 1,000,000 synthetic patients, Parquet in and out.

Measured on synthetic patients with 38 features (8 clinical measurements, 28 noise
measurements, 2 categories; ~10% of values missing) and an id scored by MultiTaskMLP with its
defaults (5 networks) trained on 5,000 patients:

- end to end (``clinical-mtl score`` in a fresh process, validation included, no
  explanations): rows per second, the time split into read, validate, preprocess, predict and
  write, and peak memory (RSS of the scoring process), for 1,000,000 and 5,000,000 rows. Each
  size runs ``--repeats`` times (default 3), each run in a fresh process, interleaved (1M, 5M,
  1M, 5M, ...) so that drift in the machine's load affects both sizes alike; every run is
  reported and the targets compare medians. A single run's peak is not a sound measurement: it
  varies between runs of the same input by more than the difference sought (the allocators'
  high-water mark; scoring hands their free memory back every ``RELEASE_EVERY_CHUNKS`` chunks,
  see ``clinical_mtl.scoring.allocation.release_free_memory``);
- the network's pure forward rate at its best batch size (preprocessed inputs in memory);
- the IO floor: reading the input and writing an output of the same size (the run's own
  output table), streaming, with nothing in between.

Targets: >= 400,000 rows/s end to end (median of the 1M runs); end-to-end time within 2x of
(IO floor + pure forward time) (median of the 1M runs); median peak memory for 5,000,000 rows no
higher than for 1,000,000 (2% tolerance for allocator noise).
Run ``python benchmarks/scoring_speed.py``; results go to ``reports/scoring_speed.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from clinical_mtl import MultiTaskMLP
from clinical_mtl.data.id_register import IdRegister
from clinical_mtl.data.persistence import save_model
from clinical_mtl.datasets import make_synthetic_cohort, synthetic_schema
from clinical_mtl.scoring.local import RELEASE_EVERY_CHUNKS

REPORTS = Path(__file__).resolve().parents[1] / "reports"
NOISE_FEATURES = 28
CHUNK = 65_536

SCORE_SCRIPT = """
import json, pathlib, resource, sys
from clinical_mtl.cli import main
model, source, output, chunk = sys.argv[1:]
status = main(["score", "--model", model, "--input", source, "--output", output, "--chunk-size", chunk])
summary = json.loads(pathlib.Path(output).with_name(pathlib.Path(output).stem + ".summary.json").read_text())
print(json.dumps(summary | {"status": status,
                            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def write_patients(path: Path, n_rows: int, seed: int) -> None:
    """Write n_rows synthetic patients in 1,000,000-row pieces (bounded memory), 64k-row groups
    (kept if an earlier run wrote them)."""
    if path.exists() and pq.ParquetFile(path).metadata.num_rows == n_rows:
        return
    writer = None
    for piece, start in enumerate(range(0, n_rows, 1_000_000)):
        X, _ = make_synthetic_cohort(min(1_000_000, n_rows - start), random_state=seed + piece,
                                     n_noise_features=NOISE_FEATURES)
        frame = X.reset_index()
        frame["patient_id"] += start
        for name in ("sex", "smoking"):
            frame[name] = frame[name].astype(object).where(frame[name].notna(), None)
        table = pa.Table.from_pandas(frame, preserve_index=False)
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table, row_group_size=CHUNK)
    writer.close()


def train_model(folder: Path) -> MultiTaskMLP:
    X, Y = make_synthetic_cohort(5_000, random_state=99, n_noise_features=NOISE_FEATURES)
    model = MultiTaskMLP(random_state=0).fit(X, Y)
    save_model(model, folder, schema=synthetic_schema(NOISE_FEATURES))
    return model


def forward_rate(model: MultiTaskMLP, n_rows: int = 1_000_000) -> tuple[float, int]:
    """Best rows per second of the network alone (the scoring path's fused forward of every
    ensemble member, on preprocessed inputs in memory) over batch sizes, and that batch size."""
    X, _ = make_synthetic_cohort(200_000, random_state=5, n_noise_features=NOISE_FEATURES)
    inputs = np.tile(model.preprocessor_.transform(X).T, (1, n_rows // len(X)))  # (features, rows)
    inputs = torch.from_numpy(np.ascontiguousarray(inputs))
    best = (0.0, 0)
    for batch_size in (1024, 2048, 4096, 16_384, 65_536):
        model.module_.predict_feature_major(inputs[:, :batch_size], batch_size)
        start = time.perf_counter()
        model.module_.predict_feature_major(inputs, batch_size)
        rate = inputs.shape[1] / (time.perf_counter() - start)
        best = max(best, (rate, batch_size))
    return best


def io_floor(input_path: Path, output_path: Path) -> float:
    """Seconds to stream-read the input and stream-write a copy of the run's output."""
    output_table = pq.read_table(output_path)
    start = time.perf_counter()
    for _ in pq.ParquetFile(input_path, pre_buffer=False).iter_batches(batch_size=CHUNK):
        pass
    with tempfile.TemporaryDirectory() as folder:
        writer = pq.ParquetWriter(Path(folder) / "copy.parquet", output_table.schema)
        for batch in output_table.to_batches(max_chunksize=CHUNK):
            writer.write_batch(batch)
        writer.close()
    return time.perf_counter() - start


def run_scoring(model_dir: Path, input_path: Path, output_path: Path) -> dict:
    start = time.perf_counter()
    completed = subprocess.run([sys.executable, "-c", SCORE_SCRIPT, str(model_dir), str(input_path),
                                str(output_path), str(CHUNK)], check=True, capture_output=True, text=True)
    wall = time.perf_counter() - start
    result = json.loads(completed.stdout.strip().splitlines()[-1]) | {"process_seconds": wall}
    if result["status"] != 0:
        raise RuntimeError(f"clinical-mtl score failed: {completed.stderr}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--large-rows", type=int, default=5_000_000)
    parser.add_argument("--repeats", type=int, default=3, help="fresh-process runs of each size, interleaved")
    parser.add_argument("--work-dir", type=Path, default=None, help="where the input files go (default: a temp dir)")
    parser.add_argument("--output", type=Path, default=REPORTS / "scoring_speed.md")
    args = parser.parse_args()
    torch.set_num_threads(2)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="scoring-bench-"))
    work.mkdir(parents=True, exist_ok=True)

    model = train_model(work / "model")
    small, large = work / "patients_1m.parquet", work / "patients_5m.parquet"
    write_patients(small, args.rows, seed=0)
    write_patients(large, args.large_rows, seed=100)

    # Interleaved (1M, 5M, 1M, 5M, ...): drift in the machine's load reaches both sizes alike.
    runs: dict[int, list[dict]] = {args.rows: [], args.large_rows: []}
    for _ in range(args.repeats):
        for n, path in ((args.rows, small), (args.large_rows, large)):
            runs[n].append(run_scoring(work / "model", path, work / f"scores_{n}.parquet"))
    median = {n: {key: statistics.median(r[key] for r in rs)
                  for key in ("seconds", "rows_per_second", "peak_rss_mb", "process_seconds")}
              for n, rs in runs.items()}
    forward, best_batch = forward_rate(model)
    floor = io_floor(small, work / f"scores_{args.rows}.parquet")
    main_run = median[args.rows]
    forward_seconds = args.rows / forward
    bound = 2 * (floor + forward_seconds)
    steps = {step: statistics.median(r["seconds_by_step"][step] for r in runs[args.rows])
             for step in runs[args.rows][0]["seconds_by_step"]}
    small_peak, large_peak = median[args.rows]["peak_rss_mb"], median[args.large_rows]["peak_rss_mb"]
    register = IdRegister()  # with the budget and block size that score_files uses

    lines = [
        "# Batch scoring speed and memory",
        "",
        f"Generated by `benchmarks/scoring_speed.py`: synthetic patients with "
        f"{pq.ParquetFile(small).metadata.num_columns - 1} features and an id, Parquet in and out, 64k-row chunks, "
        f"MultiTaskMLP defaults ({len(model.module_.members)} networks of {model.hidden_layer_sizes}) trained on "
        "5,000 patients; validation against the cohort schema included, no explanations; 2 cores.",
        "",
        f"Each size was scored {args.repeats} times, each time by `clinical-mtl score` in a fresh process, "
        f"interleaved ({args.rows:,}, {args.large_rows:,}, {args.rows:,}, ...) so that changes in the load of "
        "the shared machine reach both sizes alike; the targets compare medians. One run is not enough: the "
        "peak memory of runs of the same input varies by tens of MB, more than the difference sought.",
        "",
        "| run | rows | seconds | rows per second | rejected | peak memory (RSS, MB) | whole process, s |",
        "|---|---|---|---|---|---|---|",
        *[f"| {i + 1} | {n:,} | {r['seconds']:.2f} | {r['rows_per_second']:,.0f} | {r['rows_rejected']:,} | "
          f"{r['peak_rss_mb']:,.0f} | {r['process_seconds']:.2f} |"
          for i in range(args.repeats) for n in runs for r in [runs[n][i]]],
        "",
        "| rows | median seconds | median rows per second | median peak memory (RSS, MB) | "
        "median whole process, s |",
        "|---|---|---|---|---|",
        *[f"| {n:,} | {m['seconds']:.2f} | {m['rows_per_second']:,.0f} | {m['peak_rss_mb']:,.0f} | "
          f"{m['process_seconds']:.2f} |" for n, m in median.items()],
        "",
        "Seconds: from opening the input to renaming the finished output (the summary's own clock); the "
        "whole process adds starting Python, importing torch, pandas, pyarrow and pandera, and loading the model.",
        "",
        f"Time split for {args.rows:,} rows (median of each step over the runs): "
        + ", ".join(f"{k} {v:.2f} s" for k, v in steps.items()) + ".",
        "",
        "| floor | value |",
        "|---|---|",
        f"| pure forward of the network (best batch size {best_batch:,}) | {forward:,.0f} rows/s "
        f"({forward_seconds:.2f} s for {args.rows:,} rows) |",
        f"| IO floor: stream-read the input and stream-write the output | {floor:.2f} s |",
        f"| 2 x (IO floor + forward) | {bound:.2f} s |",
        "",
        f"Targets, on the medians: >= 400,000 rows/s end to end "
        f"({'met' if main_run['rows_per_second'] >= 400_000 else 'NOT met'}: "
        f"{main_run['rows_per_second']:,.0f}); within 2x of IO floor + forward "
        f"({'met' if main_run['seconds'] <= bound else 'NOT met'}: {main_run['seconds']:.2f} s against "
        f"{bound:.2f} s); peak memory for {args.large_rows:,} rows no higher than for {args.rows:,} "
        f"({'met' if large_peak <= small_peak * 1.02 else 'NOT met'}: "
        f"{large_peak:,.0f} MB against {small_peak:,.0f} MB, 2% tolerance for allocator noise).",
        "",
        "Most of the peak is the allocators' high-water mark, not memory in use: glibc's and pyarrow's "
        "allocators are set to keep freed chunk buffers for reuse (`clinical_mtl.scoring.allocation.tune_for_streaming`, "
        "which saves the page faults of fresh allocations), and since freed blocks are not all reused, what "
        "they hold would creep up with the input's length. Scoring therefore hands their free memory back to "
        f"the operating system every {RELEASE_EVERY_CHUNKS} chunks (`release_free_memory`: glibc's "
        "`malloc_trim(0)` and pyarrow's `release_unused()`), so that a long run stays near the level its first "
        "chunks reach instead of creeping up. That level itself varies between runs of the same input: glibc "
        "gives threads their own heaps, reserved 64 MB at a time, and how many the reading thread and the "
        "scoring threads come to use depends on timing.",
        "",
        "The register of ids already seen, which rejects an id repeated anywhere in the input, holds at most "
        f"{register.memory_budget:,} ids ({8 * register.memory_budget / 2**20:,.0f} MB) in memory; "
        "beyond that they go as sorted runs to anonymous temporary files, merged a few at a time, and a chunk's "
        f"ids are looked up by reading back only the blocks of {register.block_size:,} ids whose range holds "
        f"one of them (8 bytes per distinct id on disk: {8 * args.large_rows / 2**20:,.0f} MB for "
        f"{args.large_rows:,} rows).",
    ]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
