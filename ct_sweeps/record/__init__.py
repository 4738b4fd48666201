"""Record a sweep: the tracker's events, MLflow as the tracker, and the report."""
