"""syncrunner: declarative CRM data sync."""
__version__ = "0.1.0"
