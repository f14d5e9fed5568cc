"""The contract suites: every adapter of a port runs the same scenarios against its lab
counterpart (see faces.py for how each counterpart is started)."""
