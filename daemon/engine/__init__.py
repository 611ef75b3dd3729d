"""The inference engine: Llama-family model, paged KV cache, continuous batching scheduler."""
