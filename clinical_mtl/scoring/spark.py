"""Batch scoring on Apache Spark: the local engine's job, for data beyond one machine.

The same rules as :func:`clinical_mtl.scoring.score_files`, and the same
output: every row gets a ``row_number`` (its position in the input, files
in name order), is validated against the model's cohort schema (in
``mapInPandas``, with the schema's own code), is rejected with its reasons
or scored by the model as an MLflow pyfunc through ``mlflow.pyfunc.spark_udf``,
and rows in = rows scored + rows rejected is checked before anything is
presented as complete. A repeated id is rejected after its first row over
the whole input (a window over the id), as the local engine does.

Input and output are Parquet. Spark writes a dataset as a folder of part
files: the output and rejects folders are written under temporary names and
renamed (through Hadoop's file system, so on HDFS too) only after the row
count checks out. Rows are written in ``row_number`` order.

The session is ``SparkSession.builder.getOrCreate()``: under ``spark-submit``
it is the cluster the job was submitted to; ``master`` picks one otherwise
(``local[2]``, ``spark://host:7077``, ``yarn``). Executors need Python with
clinical_mtl installed (``PYSPARK_PYTHON``), since the model is scored there
with ``env_manager="local"``.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from ..data.batch_io import list_input_files
from ..data.run_summary import SPARK, RunSummary, check_row_accounting
from ..data.schema import ROW_NUMBER, CohortSchema
from ..data.writing import write_json_atomically
from ..exceptions import InputFileError
from ..model.features import BOOLEAN, CATEGORICAL
from ..model.outputs import output_columns
from .local import check_scoring_paths
from .model_source import LoadedModel

_SOURCE = "source_file"
_PROBLEMS = ["n_problems", "reasons"]


def spark_session(master: str | None = None):
    """The active Spark session, or a new one (on ``master`` when given).

    For a local master, Spark binds to 127.0.0.1 and runs its Python workers
    with this interpreter (``SPARK_LOCAL_IP`` and ``PYSPARK_PYTHON``, unless set).
    """
    from pyspark.sql import SparkSession

    if master is None or master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName("clinical-mtl-score")
    if master is not None:
        builder = builder.master(master)
    return (builder.config("spark.ui.enabled", "false")
            .config("spark.sql.session.timeZone", "UTC")
            .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
            .getOrCreate())


def score_files_with_spark(
    loaded: LoadedModel,
    inputs: str | Path,
    output: str | Path,
    rejects: str | Path | None = None,
    *,
    top_k: int = 0,
    master: str | None = None,
    spark=None,
) -> RunSummary:
    """Score a Parquet file or folder of Parquet files on Spark.

    Parameters
    ----------
    loaded : LoadedModel
        From :func:`clinical_mtl.scoring.load_model_for_scoring`.
    inputs : str or Path
        A Parquet file or a folder of them.
    output : str or Path
        The output dataset (a folder of Parquet part files), columns as
        :func:`clinical_mtl.scoring.score_files` writes them.
    rejects : str or Path, default=None
        The rejected rows dataset (default: ``<output stem>.rejects.<suffix>``),
        columns as the local engine writes them.
    top_k : int, default=0
        Largest SHAP contributions to add per outcome.
    master : str, default=None
        Spark master for a new session (None: Spark's own configuration).
    spark : SparkSession, default=None
        A session to use instead.

    Returns
    -------
    RunSummary
        ``engine="spark"``; also written to ``<output stem>.summary.json``.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    paths = check_scoring_paths(inputs, output, rejects)
    output, rejects = paths["output"], paths["rejects"]
    files = list_input_files(inputs)
    not_parquet = [str(f) for f in files if f.suffix.lower() not in (".parquet", ".pq")]
    if not_parquet:
        raise InputFileError(f"The Spark engine reads Parquet only; not Parquet: {not_parquet}.")
    schema = loaded.schema
    started = datetime.now(timezone.utc)
    clock = time.perf_counter()
    spark = spark or spark_session(master)

    rows, rows_in = _numbered_rows(spark, files, schema)
    first = Window.partitionBy(schema.id_column).orderBy(ROW_NUMBER)
    rows = rows.withColumn("repeated_id", F.col(schema.id_column).isNotNull() & (F.row_number().over(first) > 1))
    validated = rows.mapInPandas(_validator(schema), _validated_type(rows, schema))
    rejected = validated.where(F.col("reasons").isNotNull()).select(
        ROW_NUMBER, _SOURCE, F.col(schema.id_column).cast("string").alias(schema.id_column), *_PROBLEMS)

    partial_output, partial_rejects = (path.with_name(f".{path.name}.partial-{uuid.uuid4().hex[:8]}")
                                       for path in (output, rejects))
    pyfunc_folder = tempfile.TemporaryDirectory(prefix="clinical-mtl-pyfunc-")
    try:
        scored = _scored(spark, loaded, _pyfunc_uri(loaded, Path(pyfunc_folder.name)),
                         validated.where(F.col("reasons").isNull()), top_k, started)
        scored.orderBy(ROW_NUMBER).write.parquet(str(partial_output))
        rejected.orderBy(ROW_NUMBER).write.parquet(str(partial_rejects))
        rows_scored, rows_rejected = (spark.read.parquet(str(path)).count() for path in (partial_output, partial_rejects))
        check_row_accounting(rows_in, {"scored": rows_scored, "rejected rows": rows_rejected})  # rows_in: footers
        seconds = time.perf_counter() - clock
        summary = RunSummary(
            rows_in=rows_in, rows_scored=rows_scored, rows_rejected=rows_rejected, seconds=seconds,
            rows_per_second=rows_in / seconds, input_files=[str(f) for f in files], output=str(output),
            rejects=str(rejects), model=loaded.identity(), started_at=started.isoformat(), engine=SPARK,
        )
        _rename(spark, partial_rejects, rejects)
        write_json_atomically(output.with_name(f"{output.stem}.summary.json"), summary.to_dict())
        _rename(spark, partial_output, output)  # last: its presence means the run completed
    except BaseException:
        for path in (partial_output, partial_rejects):
            _delete(spark, path)
        raise
    finally:
        pyfunc_folder.cleanup()
    return summary


def _numbered_rows(spark, files: list[Path], schema: CohortSchema):
    """The input rows with ``row_number`` (offset of the file + row index in it) and ``source_file``,
    and their count (from the Parquet footers: no pass over the data)."""
    from pyspark.sql import functions as F

    columns = [schema.id_column, *schema.feature_names]
    frames, offset = [], 0
    for path in files:
        try:
            metadata = pq.ParquetFile(path).metadata
        except Exception as error:  # pyarrow raises several kinds for a damaged file
            raise InputFileError(f"Cannot read {path}: {error}") from error
        if metadata.num_rows == 0:
            raise InputFileError(f"Input file {path} has no rows.")
        frame = spark.read.parquet(str(path))
        schema.check_columns(frame.columns, str(path))
        frames.append(frame.select(
            (F.lit(offset) + F.col("_metadata.row_index")).alias(ROW_NUMBER),
            F.lit(str(path)).alias(_SOURCE), *columns,
        ))
        offset += metadata.num_rows
    rows = frames[0]
    for frame in frames[1:]:
        rows = rows.unionByName(frame)
    return rows, offset


def _validated_type(rows, schema: CohortSchema):
    """Spark type of the validated rows: features typed for the model, problems null when valid."""
    from pyspark.sql import types as T

    spark_types = {BOOLEAN: T.BooleanType(), CATEGORICAL: T.StringType()}
    return T.StructType([
        rows.schema[ROW_NUMBER], rows.schema[_SOURCE], rows.schema[schema.id_column],
        *[T.StructField(f.name, spark_types.get(f.type, T.DoubleType())) for f in schema.features],
        T.StructField("repeated_id", T.BooleanType()),
        T.StructField("n_problems", T.LongType()), T.StructField("reasons", T.StringType()),
    ])


def _validator(schema: CohortSchema):
    """The ``mapInPandas`` function: each batch validated by ``schema.validate``.

    A repeated id is judged over the whole input, so batches are first
    marked by a window (``repeated_id``) and the schema is told which rows
    repeat an earlier id.
    """

    def validate(batches):
        for batch in batches:
            batch = batch.reset_index(drop=True)
            result = schema.validate(batch, repeated_ids=batch["repeated_id"].to_numpy(dtype=bool))
            problems = pd.DataFrame(np.full((len(batch), 2), None, dtype=object), columns=_PROBLEMS)
            if len(result.rejected):
                positions = result.rejected[ROW_NUMBER].to_numpy()
                problems.loc[positions, "n_problems"] = result.rejected["n_problems"].to_numpy()
                problems.loc[positions, "reasons"] = result.rejected["reasons"].to_numpy()
            features = {}
            for feature in schema.features:
                values = result.valid[feature.name].reindex(batch.index)
                if feature.type in (BOOLEAN, CATEGORICAL):
                    values = values.astype(object).where(values.notna(), None)
                features[feature.name] = values
            yield pd.DataFrame({
                ROW_NUMBER: batch[ROW_NUMBER], _SOURCE: batch[_SOURCE], schema.id_column: batch[schema.id_column],
                **features, "repeated_id": batch["repeated_id"], **problems,
            })

    return validate


def _scored(spark, loaded: LoadedModel, model_uri: str, valid, top_k: int, started: datetime):
    """The output columns of the valid rows, predicted by the model's pyfunc on the executors."""
    import mlflow
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    columns = output_columns(loaded.model, top_k)
    result_type = T.StructType([T.StructField(c.name, T.DataType.fromDDL(c.type_name("spark")))
                                for c in columns])
    predict = mlflow.pyfunc.spark_udf(spark, model_uri, result_type=result_type, env_manager="local",
                                      params={"top_k": int(top_k)})
    features = F.struct(*[F.col(name) for name in loaded.schema.feature_names])
    identity = {"model_name": loaded.name, "model_version": loaded.version, "run_id": loaded.run_id}
    return valid.select(ROW_NUMBER, loaded.schema.id_column, predict(features).alias("prediction")).select(
        ROW_NUMBER, loaded.schema.id_column, *[F.col("prediction")[c.name].alias(c.name) for c in columns],
        *[F.lit(value).cast("string").alias(name) for name, value in identity.items()],
        F.lit(started).cast("timestamp").alias("scored_at"),
    )


def _pyfunc_uri(loaded: LoadedModel, folder: Path) -> str:
    """An MLflow model URI of the loaded model: its own, or a saved folder written as a pyfunc in ``folder``."""
    if not Path(loaded.reference).is_dir():
        return loaded.reference
    from ..tracking.pyfunc import save_pyfunc_model

    return str(save_pyfunc_model(loaded.reference, folder / "model"))


def _hadoop_path(spark, path: Path):
    jvm = spark.sparkContext._jvm
    hadoop_path = jvm.org.apache.hadoop.fs.Path(str(path))
    return hadoop_path, hadoop_path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())


def _rename(spark, source: Path, destination: Path) -> None:
    """Move a finished dataset into place, replacing an earlier one."""
    target, file_system = _hadoop_path(spark, destination)
    if file_system.exists(target):
        file_system.delete(target, True)
    if not file_system.rename(_hadoop_path(spark, source)[0], target):
        raise OSError(f"Could not rename {source} to {destination}.")


def _delete(spark, path: Path) -> None:
    target, file_system = _hadoop_path(spark, path)
    if file_system.exists(target):
        file_system.delete(target, True)
