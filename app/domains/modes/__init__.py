"""Operating modes (the "CEO brain"): EXPANSION, OPTIMIZATION, PRESERVATION, EMERGENCY as a layer of the limit stack."""
