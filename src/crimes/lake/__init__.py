"""The data lake: `storage` (one code path for S3 and folders, atomic publishing), `layout`
(where each set lives) and `datasets` (reading the published sets back)."""
