"""Market metadata: symbols, precision and limits of the tradable perpetual swaps."""
