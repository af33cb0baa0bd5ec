"""The ExLlamaV3 engine: EXL3 quants (and plain HF folders) on CUDA GPUs."""
