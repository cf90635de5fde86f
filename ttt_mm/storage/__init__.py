"""What the pipeline writes to disk, however it is used: outputs written whole (`atomic`), a file's
read-and-write held against other processes (`locks`) and the per-user cache folder (`cache`)."""
