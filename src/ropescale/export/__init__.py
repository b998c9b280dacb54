"""Export: HF checkpoint directories (both rope schemas), vLLM arguments, llama.cpp flags and GGUF keys."""
