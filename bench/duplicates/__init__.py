"""Copies inside a folder: imgsearch duplicates vs imagededup (issue 17)."""
