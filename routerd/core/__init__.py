"""routerd's pure core: no sockets, no netlink, no clock (enforced by import-linter)."""
