"""Fine-tuning rerankers on Ray Train (`rerank finetune`), including distillation from scores.

config (typed options) → data (JSONL / scored shards, validated on the driver) → groups (1 positive
+ sampled negatives per query) → train_loop (one Ray Train worker; same tokenizer and scoring module
as `rerank run`) → publish (the model directory, atomically). `runner` drives it from the driver.
"""
