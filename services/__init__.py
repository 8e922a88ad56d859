"""The talking-avatar pipeline: five services (gateway, asr, llm, tts, lipsync) over ZeroMQ."""
