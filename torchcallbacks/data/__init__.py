"""Data: what `fit`, `evaluate` and `predict` accept, turned into batches on the device
(`inputs`), and the parts of a batch (`batches`)."""
