"""Strategy Brain: per signal source performance from the trades table, and recommendations."""
