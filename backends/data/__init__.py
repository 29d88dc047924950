"""The one data pipeline shared by both backends, the CLI and the GUI (no torch, no mlx).

Readers (JSONL, JSON, CSV, Parquet) -> format detection -> per-row validation -> tokenisation
with the model's chat template and completion-only labels -> split -> batches of numpy arrays.
"""
