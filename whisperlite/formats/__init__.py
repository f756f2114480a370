"""Model file formats. Each reader fills the same in-memory structures
(`models.whisper.WhisperCheckpoint`, or GGUF tensors as `kernels.QTensor`)."""
