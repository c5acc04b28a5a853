"""Speech out: the speaker that pairs queue items with the engine's audio,
the player on the output device, loudness and ALSA's messages."""
