"""ETL: extract raw crime records, clean them, split and publish them to the data lake."""
