"""cache_service package."""
