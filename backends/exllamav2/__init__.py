"""The ExLlamaV2 engine: EXL2 and GPTQ quants and plain HF folders on CUDA GPUs."""
