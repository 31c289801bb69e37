"""Experiment harness: one generic trainer, tasks, and the absl entry point."""
