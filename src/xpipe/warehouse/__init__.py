"""The DuckDB warehouse: connections, table contracts, the SQL-model runner, seeds, layout
migrations, provenance (meta.runs), and the read-only guard for user SQL."""
