"""The DuckDB warehouse: connections, table contracts, the SQL-model runner, seeds, layout
migrations, provenance (meta.runs), the read-only guard for user SQL, and the file writer
(CSV, Parquet, VOTable, FITS, each with its provenance)."""
