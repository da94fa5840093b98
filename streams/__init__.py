"""Faust stream processors: derive all state from the log and decide."""
