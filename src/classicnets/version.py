"""The package's version, in a module of its own: low modules (the trainer's checkpoint metadata,
the downloader's User-Agent, the report's machine record) read it without importing the package's
public API, which imports them."""

__version__ = "0.1.0"
