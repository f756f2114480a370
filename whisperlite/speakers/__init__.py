"""Speaker diarization: who spoke when, from speaker embeddings of the transcribed speech."""
