"""`xpipe vote`: the voting SQL on an external per-detection table in the paper's layout.

It runs in an in-memory warehouse with the same models as `xpipe classify`, so the published
catalogue can be re-derived from its own per-detection file and compared.
"""

from __future__ import annotations

from pathlib import Path

from xpipe.ingest.files import load_files
from xpipe.predict.export import export_results
from xpipe.predict.scoring import voting_warehouse
from xpipe.warehouse.connection import only_row, scalar, staging_name
from xpipe.warehouse.contracts import create_table
from xpipe.warehouse.provenance import input_provenance
from xpipe.warehouse.seeds import class_names
from xpipe.warehouse.sql_models import check_written, run_models


def vote_file(detections: Path, out_dir: Path, fmt: str = "csv", *, chunk_rows: int = 100_000
              ) -> dict[str, int]:
    with voting_warehouse() as con:
        # The feature columns of the published per-source layout come from raw detections,
        # which a per-detection classification file does not carry: they stay empty.
        create_table(con, "raw.detections")
        run_models(con, names=["model.stg_detections", "model.detection_features"])
        load_files(con, "raw.paper_detections", [detections], id_column="det_id")
        probs = ", ".join(f'"{c}"' for c in class_names())
        con.execute(f"INSERT INTO results.detection_class BY NAME SELECT det_id, name, obsid, "
                    f"ra, dec, cluster, {probs}, main_type AS pred_class "
                    f"FROM {staging_name('raw.paper_detections')}")
        check_written(con, "results.detection_class")
        run_models(con, layers=["votes"])  # the votes and the published layouts
        export_results(con, out_dir, fmt, provenance=input_provenance(str(detections)),
                       chunk_rows=chunk_rows)
        row = only_row(con, "SELECT count(*), count(*) FILTER (WHERE is_unique), "
                          "count(*) FILTER (WHERE NOT is_unique) FROM results.source_class")
        detections_count = int(scalar(con, "SELECT count(*) FROM results.detection_class"))
    return {"detections": detections_count, "sources": row[0], "uniquely_classified": row[1],
            "ambiguous": row[2]}
