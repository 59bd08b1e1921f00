"""Accuracy benchmark: find the source of transformed queries, three methods side by side."""
