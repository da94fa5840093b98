"""The recorder: records rooms to MinIO without transcoding (see README.md)."""
