"""What the ExLlamaV2 and ExLlamaV3 engines share: sizing, job results, the generator thread.

Nothing here imports exllamav2 or exllamav3, so all of it runs (and is tested) without a GPU.
"""
