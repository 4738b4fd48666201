"""Run a planned sweep on Ray Tune: the Ray it runs on, the trainable, the tuner, the results."""
