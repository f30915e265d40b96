"""PolicyStore v2: risk profiles, runtime mode switches, overrides, blocklist, kill switch."""
