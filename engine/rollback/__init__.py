"""Rollbacks as tracked processes: phases, steps and deadlines (process.py), recovery (recovery.py)."""
