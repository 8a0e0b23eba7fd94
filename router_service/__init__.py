"""router_service package."""
