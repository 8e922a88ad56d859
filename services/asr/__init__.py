"""The asr service."""
