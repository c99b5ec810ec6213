"""The host's own commands (`ddbench run/show/...`, `compare`, `report`), each module a `register_commands` plugin
named in pyproject.toml's `ddbench.commands` group, and the command kit they and command plugins share."""
