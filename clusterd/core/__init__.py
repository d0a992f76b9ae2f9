"""clusterd's pure core: no Kubernetes client, sockets or clock (enforced by import-linter)."""
