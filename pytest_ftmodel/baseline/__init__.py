"""Regression baselines: a committed file of per-item results of the released model, and the paired
comparison that tells a real drop from noise."""
