"""Fake CRM HTTP APIs (HubSpot CRM v3, CallRail v3, Arrivy, SalesRabbit, LeadConduit,
HighLevel v2) started in-process by tests."""

from .arrivy import FakeArrivy
from .callrail import FakeCallRail
from .gohighlevel import FakeGoHighLevel
from .hubspot import FakeHubSpot
from .leadconduit import FakeLeadConduit
from .salesrabbit import FakeSalesRabbit
from .server import Counters, FakeAPI, Faults, LoggedRequest

__all__ = ["FakeAPI", "FakeArrivy", "FakeCallRail", "FakeGoHighLevel", "FakeHubSpot", "FakeLeadConduit",
           "FakeSalesRabbit", "Faults", "Counters", "LoggedRequest"]
