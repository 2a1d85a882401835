"""Checkpoints: the files (`files`: formats, safe loading, atomic writes) and what a full
checkpoint holds to resume training exactly (`resume`)."""
