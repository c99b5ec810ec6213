"""Runs: a request resolved against the plugins and the database, one run executed and recorded, a sweep's job
run in a worker. Stands on `host`."""
