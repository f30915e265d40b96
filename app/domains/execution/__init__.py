"""Execution: exchange math (margin, liquidation, funding, precision), the exchange interface, the
paper exchange and the Binance USDⓈ-M adapter."""
