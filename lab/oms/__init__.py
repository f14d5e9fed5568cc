"""A simulated OMS implementing the DR-control protocol (see DESIGN.md)."""
