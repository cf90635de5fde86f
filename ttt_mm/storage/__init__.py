"""What the pipeline writes to disk, however it is used: outputs written whole (`atomic`) and the
per-user cache folder (`cache`)."""
