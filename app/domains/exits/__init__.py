"""Exits: the Exit Brain plans, harvest and heat gate proposals; pure domain code, no I/O."""
