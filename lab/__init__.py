"""The lab: a complete simulated trading stack on loopback, for demos, drills and tests."""
