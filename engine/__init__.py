"""Speech synthesis: the voice library and (from the engine issue on) F5-TTS."""
