"""The record store: run records and their identity (the run key), the record schema, predictions, provenance, atomic
files, saved adapters."""
