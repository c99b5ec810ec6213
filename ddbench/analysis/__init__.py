"""Many runs read back from the database: the reference at equal count, the scores, the report's cells and curves,
and the report itself (report.md, plots, report.html). Reads what `run` wrote; runs nothing."""
