"""The version, in its own module: no module of the package imports the package ``__init__``."""

__version__ = "0.1.0"
