"""Fake CRM HTTP APIs (HubSpot CRM v3, CallRail v3) started in-process by tests."""

from .callrail import FakeCallRail
from .hubspot import FakeHubSpot
from .server import Counters, FakeAPI, Faults, LoggedRequest

__all__ = ["FakeAPI", "FakeCallRail", "FakeHubSpot", "Faults", "Counters", "LoggedRequest"]
