"""Passes transform a Model into a new Model; see base.py for the interface and the registry."""
