"""Moved to common/cliconfig.py; this name stays only while other branches move over."""

from common.cliconfig import ConfigFile, PrintConfig, configurable

__all__ = ["ConfigFile", "PrintConfig", "configurable"]
