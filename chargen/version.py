"""The version of chargen: one place for setup.cfg, config.json and `chargen --version`."""

__version__ = "0.1.0"
