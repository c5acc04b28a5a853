"""The chat-to-speech bot: policy, queue, control, commands and the app."""
