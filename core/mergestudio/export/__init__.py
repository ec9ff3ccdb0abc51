"""Sharing a merged model: GGUF files for llama.cpp / Ollama (``gguf``) and uploads to the
Hugging Face Hub (``hub``). Both take an event sink and a cancel token; neither imports Qt."""
