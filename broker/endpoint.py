"""Moved to common/endpoint.py; this name stays only while other branches move over."""

from common.endpoint import BrokerEndpoint, EndpointError

__all__ = ["BrokerEndpoint", "EndpointError"]
