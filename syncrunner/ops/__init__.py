"""Operator commands: history, health, init, and the machine-readable run summary.
One module per job; cli.py only registers them."""
