"""The scoring module's faster paths, each held to the padded eager scores: packed (unpadded)
batches with variable-length attention (`--attention`), torch.compile (`--compile`), and on CPU
linear layers on oneDNN-prepacked weights (always); plus the CPU's bf16 features (`--dtype auto`)."""
