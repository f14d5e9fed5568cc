"""drctl: the operator's command line for failover-runbooks and its lab."""
