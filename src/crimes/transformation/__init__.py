"""The fitted feature transformation: `fitting` (the scikit-learn pipeline, fitted by the ETL)
and `lookup` (the same transformation as lookup tables, what serving computes with)."""
