"""memgap: where the memory goes when an LLM inference engine runs, per environment."""

__version__ = "0.1.0"
