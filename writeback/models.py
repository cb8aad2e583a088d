"""Writeback's data (tasks, inventory runs) arrives with the writeback and inventory work."""
