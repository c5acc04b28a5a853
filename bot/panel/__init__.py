"""The streamer's web panel, its JSON API, the OBS overlay and /metrics."""
