"""One module per external dialect, each implementing one port of ``domain``; wire formats
live here and nowhere else."""
