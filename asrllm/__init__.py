"""asrllm: LLM-based speech recognition recipes."""
