"""What lies on disk: plugins.toml, the results database and its row checks, stored synthetic sets, identities
(config hash, dataset fingerprint), the shipped reference table and a run's provenance. Stands on `core` and
`ddbench.api`."""
