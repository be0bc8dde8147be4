-- Scalar macros shared by the models and their views, stored in the `model` schema so that
-- read-only connections (`xpipe sql`) can use the views too.
CREATE OR REPLACE MACRO model.log_minmax(x, log_offset, lo, hi) AS
    (ln(x + log_offset) - lo) / (hi - lo);
CREATE OR REPLACE MACRO model.minmax(x, lo, hi) AS
    (x - lo) / (hi - lo);
-- "mean±std" as the published tables print it: each rounded to 3 decimals, shortest form.
CREATE OR REPLACE MACRO model.mean_pm_std(m, s) AS
    CAST(round(m, 3) AS VARCHAR) || '±' || CAST(round(s, 3) AS VARCHAR);
-- Cross-match cells (sql/ingest/match_simbad_cells.sql): offsets along one axis to the cells an
-- object at cell coordinate u can match in, its home cell (0) and the neighbour across a face
-- when it lies within `margin` (the radius in cell units) of that face.
CREATE OR REPLACE MACRO model.cell_reach(u, margin) AS
    CASE WHEN u - floor(u) < margin THEN [0, -1]
         WHEN u - floor(u) > 1 - margin THEN [0, 1] ELSE [0] END;
