"""Frozen models: the fitted classifier as one immutable value (`frozen`), its version store
in the warehouse (`store`) and its portable file (`file`)."""
