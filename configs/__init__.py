"""Run configurations: each module defines ``get_config(arg=None) -> ConfigDict``."""
