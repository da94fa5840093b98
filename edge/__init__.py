"""The station agent that runs at a site (``python -m edge --config file.toml``)."""
