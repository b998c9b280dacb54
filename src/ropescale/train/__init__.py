"""Fine-tuning at the target length: chunked loss, training loop on accelerate, LoRA, checkpoints."""
