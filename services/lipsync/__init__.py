"""The lipsync service."""
