"""Engine adapters: how to launch an engine, when it is ready, how to read its log."""
